//! The balance rule: every manager aims for its fair share and hands back only a clear excess.

/// A manager's fair share of `accounts` among `live_managers`: `ceil(accounts / live)`, with at
/// least one manager counted (the one asking).
pub fn fair_share(accounts: usize, live_managers: usize) -> usize {
    accounts.div_ceil(live_managers.max(1))
}

/// How many of the `held` accounts a manager hands back: none while it holds at most
/// `fair_share + slack`, else everything above `fair_share`, so that the managers below their
/// share find exactly the accounts they lack and nobody moves an account twice.
pub fn excess(held: usize, fair_share: usize, slack: usize) -> usize {
    if held > fair_share.saturating_add(slack) {
        held - fair_share
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_share_rounds_up_and_covers_every_account() {
        assert_eq!(fair_share(100, 3), 34);
        assert_eq!(fair_share(100, 4), 25);
        assert_eq!(fair_share(3, 5), 1);
        assert_eq!(fair_share(0, 2), 0);
        assert_eq!(fair_share(7, 0), 7);
        for accounts in 0..200 {
            for live in 1..9 {
                assert!(fair_share(accounts, live) * live >= accounts);
            }
        }
    }

    #[test]
    fn only_a_clear_excess_is_handed_back_down_to_the_share() {
        assert_eq!(excess(34, 25, 1), 9);
        assert_eq!(excess(26, 25, 1), 0);
        assert_eq!(excess(27, 25, 1), 2);
        assert_eq!(excess(26, 25, 0), 1);
        assert_eq!(excess(3, 25, 1), 0);
    }

    #[test]
    fn a_joining_manager_finds_its_whole_share_unclaimed() {
        // Three managers holding 34, 33 and 33 of 100 accounts; a fourth joins.
        let share = fair_share(100, 4);
        let freed: usize = [34, 33, 33]
            .iter()
            .map(|&held| excess(held, share, 1))
            .sum();
        assert_eq!(freed, share);
    }
}
