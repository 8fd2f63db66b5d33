//! Structured lock names: one per app, one per task type, one for the update step.

use baton_core::{Error, LockHolder, LockName, Result};

/// The first character of the names this crate keeps for itself (queue tickets and entries);
/// task lock names may not start with it.
pub const RESERVED_PREFIX: char = '~';

/// The longest task lock name, in bytes: shorter than [`baton_core::MAX_NAME_LEN`], so that the
/// queue entry that carries the name and a ticket number still fits in a lock name.
pub const MAX_TASK_LOCK_LEN: usize = 160;

/// The lock of one application, `app:<id>`: two operations on one app never run at once.
///
/// # Errors
///
/// `InvalidInput` if the id makes a name that [`task_lock`] refuses.
pub fn app(id: impl std::fmt::Display) -> Result<LockName> {
    task_lock(format!("app:{id}"))
}

/// The lock of one kind of task, `tasktype:<kind>`: one task of that kind at a time.
///
/// # Errors
///
/// `InvalidInput` if the kind makes a name that [`task_lock`] refuses.
pub fn task_type(kind: impl std::fmt::Display) -> Result<LockName> {
    task_lock(format!("tasktype:{kind}"))
}

/// The lock of the platform update step, `update`.
pub fn update() -> LockName {
    #[allow(clippy::expect_used)]
    LockName::new("update").expect("\"update\" is a valid lock name")
}

/// Any name a task may lock: a valid [`LockName`] of at most [`MAX_TASK_LOCK_LEN`] bytes that
/// does not start with [`RESERVED_PREFIX`].
///
/// # Errors
///
/// `InvalidInput` saying what is wrong with `name`.
pub fn task_lock(name: impl AsRef<str>) -> Result<LockName> {
    let name = name.as_ref();
    let lock = LockName::new(name)?;
    check_task_lock(&lock)?;
    Ok(lock)
}

/// Checks that `name` may be locked by a task (see [`task_lock`]).
///
/// # Errors
///
/// `InvalidInput` saying what is wrong with `name`.
pub fn check_task_lock(name: &LockName) -> Result<()> {
    if name.as_str().starts_with(RESERVED_PREFIX) {
        return Err(Error::invalid(format!(
            "lock name {name:?} starts with {RESERVED_PREFIX:?}, which is kept for queue entries"
        )));
    }
    if name.as_str().len() > MAX_TASK_LOCK_LEN {
        return Err(Error::invalid(format!(
            "task lock name is {} bytes long, more than the {MAX_TASK_LOCK_LEN} allowed",
            name.as_str().len()
        )));
    }
    Ok(())
}

/// The ticket lock of `name`: held for an instant while a waiter takes its place in line.
pub(crate) fn ticket(name: &LockName) -> Result<LockName> {
    LockName::new(format!("{RESERVED_PREFIX}ticket:{name}"))
}

/// Queue entry number `slot` of `name`. A waiter takes the lowest slot free among the live
/// entries of each of its names, so a name never has more entries than waiters at once.
pub(crate) fn queue_entry(name: &LockName, slot: usize) -> Result<LockName> {
    LockName::new(format!("{RESERVED_PREFIX}queue:{slot}:{name}"))
}

/// The reason written on a queue entry: the waiter's ticket, then its own reason.
pub(crate) fn queue_reason(ticket: u64, reason: &str) -> String {
    let mut reason = reason.to_owned();
    let room = baton_core::MAX_REASON_LEN - 21;
    if reason.len() > room {
        let mut end = room;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    format!("{ticket:020} {reason}")
}

/// A waiter's entry in the line for one lock, read from the holder of a queue entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// The lock waited for.
    pub name: LockName,
    /// The entry's slot among the entries of that lock.
    pub slot: usize,
    /// The waiter's ticket: waiters for a common lock are served in ticket order.
    pub ticket: u64,
    /// The waiter's reason.
    pub reason: String,
    /// The entry itself, as the backend lists it.
    pub holder: LockHolder,
}

/// The queue entry `holder` holds, or `None` if it holds any other lock.
pub fn parse_queue_entry(holder: &LockHolder) -> Option<QueueEntry> {
    let rest = holder
        .name
        .as_str()
        .strip_prefix(RESERVED_PREFIX)?
        .strip_prefix("queue:")?;
    let (slot, name) = rest.split_once(':')?;
    let (ticket, reason) = holder.reason.split_once(' ')?;
    Some(QueueEntry {
        name: LockName::new(name).ok()?,
        slot: slot.parse().ok()?,
        ticket: ticket.parse().ok()?,
        reason: reason.to_owned(),
        holder: holder.clone(),
    })
}

/// Whether `name` is one this crate keeps for itself (a ticket or a queue entry).
pub fn is_internal(name: &LockName) -> bool {
    name.as_str().starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn structured_names_read_as_the_seed_wrote_them() {
        assert_eq!(app(42).unwrap().as_str(), "app:42");
        assert_eq!(task_type("backup").unwrap().as_str(), "tasktype:backup");
        assert_eq!(update().as_str(), "update");
    }

    #[test]
    fn reserved_and_overlong_names_are_refused() {
        assert!(task_lock("~queue:1:x").is_err());
        assert!(task_lock("a".repeat(MAX_TASK_LOCK_LEN + 1)).is_err());
        assert!(task_lock("a".repeat(MAX_TASK_LOCK_LEN)).is_ok());
    }

    #[test]
    fn queue_entries_round_trip_even_for_names_with_colons() {
        use baton_core::{FencingToken, Lease, Owner, Timestamp};
        let name = task_lock("app:7:db").unwrap();
        let holder = |lock: LockName, reason: String| LockHolder {
            name: lock,
            lease: Lease::granted(
                Owner::new("o").unwrap(),
                FencingToken::new(1),
                Timestamp::EPOCH,
            ),
            reason,
            since: Timestamp::EPOCH,
        };
        let entry = holder(
            queue_entry(&name, 3).unwrap(),
            queue_reason(1234, "task 5 (x y)"),
        );
        let parsed = parse_queue_entry(&entry).unwrap();
        assert_eq!(
            (
                parsed.name,
                parsed.slot,
                parsed.ticket,
                parsed.reason.as_str()
            ),
            (name, 3, 1234, "task 5 (x y)")
        );
        assert_eq!(
            parse_queue_entry(&holder(app(7).unwrap(), "1 x".into())),
            None
        );
        let longest = task_lock("a".repeat(MAX_TASK_LOCK_LEN)).unwrap();
        assert!(queue_entry(&longest, usize::MAX).is_ok());
        assert!(queue_reason(u64::MAX, &"é".repeat(600)).len() <= baton_core::MAX_REASON_LEN);
    }
}
