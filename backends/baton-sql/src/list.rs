//! The page of `Queue::list` from rows fetched one past its limit.

use baton_core::{Job, JobPage};

/// The placeholders' order of a list statement: the id bound (`before`), then the queue and the
/// state when filtered on, then the row limit; `queue` and `state` say which are present.
/// Returns the conditions after `WHERE id < <first>`, with `placeholder(n)` for the n-th (from 1)
/// parameter, and the placeholder of the limit.
pub fn list_conditions(
    queue: bool,
    state: bool,
    placeholder: impl Fn(usize) -> String,
) -> (String, String) {
    let mut conditions = String::new();
    let mut n = 1;
    if queue {
        n += 1;
        conditions.push_str(&format!(" AND queue = {}", placeholder(n)));
    }
    if state {
        n += 1;
        conditions.push_str(&format!(" AND state = {}", placeholder(n)));
    }
    (conditions, placeholder(n + 1))
}

/// The page of at most `limit` jobs from `jobs`, fetched newest first with a limit of
/// `limit + 1`: the extra row, if any, says that an older match is left.
pub fn page(mut jobs: Vec<Job>, limit: usize) -> JobPage {
    let next = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|job| job.id)
    } else {
        None
    };
    JobPage { jobs, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_their_placeholders_in_binding_order() {
        let numbered = |n: usize| format!("${n}");
        assert_eq!(
            list_conditions(false, false, numbered),
            (String::new(), "$2".to_owned())
        );
        assert_eq!(
            list_conditions(true, true, numbered),
            (" AND queue = $2 AND state = $3".to_owned(), "$4".to_owned())
        );
        assert_eq!(
            list_conditions(false, true, |_| "?".to_owned()),
            (" AND state = ?".to_owned(), "?".to_owned())
        );
    }
}
