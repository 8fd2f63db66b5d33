//! The example runs to the end: three leaderships one after another, each on a different
//! instance with a greater token, every tick written under the newest token, and the killed
//! master replaced without its `stop` ever running.

use std::process::Command;

#[test]
fn the_master_moves_on_when_stopped_or_killed_with_increasing_tokens_and_one_leader_at_a_time() {
    let output = Command::new(env!("CARGO_BIN_EXE_example-master"))
        .args(["--lease-ms", "800"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("done: 3 leaderships, tokens "),
        "{stdout}"
    );
    assert!(
        summary.ends_with(", 0 refused; never two leaders at once"),
        "{stdout}"
    );
    assert!(!stdout.contains("violation:"), "{stdout}");

    // Three elections, each of another instance, each with a greater token.
    let elections: Vec<(&str, u64)> = stdout
        .lines()
        .filter_map(|line| {
            let (node, token) = line.split_once(": elected master, token ")?;
            Some((node, token.parse().ok()?))
        })
        .collect();
    assert_eq!(elections.len(), 3, "{stdout}");
    assert!(
        elections.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "{stdout}"
    );
    let mut nodes: Vec<&str> = elections.iter().map(|(node, _)| *node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "{stdout}");

    // Every master ticked, and no tick came under an older token than one before it.
    let ticks: Vec<u64> = stdout
        .lines()
        .filter(|line| line.contains(": tick "))
        .filter_map(|line| line.rsplit_once(", token ")?.1.parse().ok())
        .collect();
    assert!(ticks.windows(2).all(|pair| pair[0] <= pair[1]), "{stdout}");
    for (_, token) in &elections {
        assert!(
            ticks.contains(token),
            "no tick under token {token}\n{stdout}"
        );
    }

    // The stopped masters ran their `stop`; the killed one never did, and was replaced.
    assert_eq!(
        stdout
            .matches("stopped being master (shutdown), token ")
            .count(),
        2,
        "{stdout}"
    );
    let killed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("demo: killing ")?.split_once(';'))
        .map(|(node, _)| node)
        .expect("a master was killed");
    assert_eq!(killed, elections[1].0, "{stdout}");
    assert!(
        !stdout.contains(&format!("{killed}: stopped being master")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("after {killed} was killed")),
        "{stdout}"
    );
}
