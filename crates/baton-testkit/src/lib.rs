//! Baton's test kit: the conformance suite that specifies what every backend must do, run by each
//! backend against itself, and [`Faulty`], a wrapper that injects failures.

pub mod conformance;
pub mod faulty;

pub use conformance::{Harness, Report, TestTime, run, run_all};
pub use faulty::{FaultControl, Faulty, Mode, Op};
