//! Baton's test kit: the conformance suite that specifies what every backend must do, run by each
//! backend against itself, [`Faulty`], a wrapper that injects failures, and
//! [`drop_lock_call`], which cuts calls short at varying points.

pub mod conformance;
pub mod dropping;
pub mod faulty;

pub use conformance::{Harness, Report, TestTime, run, run_all};
pub use dropping::drop_lock_call;
pub use faulty::{FaultControl, Faulty, Mode, Op};
