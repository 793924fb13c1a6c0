//! Whole networks of engines in the deterministic simulator: every scenario runs for
//! `TESSERA_SIM_SEEDS` seeds (default 100) and each run checks safety after every step and
//! liveness at its end (see `tessera_consensus::sim`).

use tessera_consensus::sim::{
    run, Behavior, Crash, LeaderCrash, Liveness, Partition, Report, Rng, Scenario,
};

fn seeds() -> u64 {
    std::env::var("TESSERA_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

/// Runs `build(seed)` for every seed, failing with the first violation, and returns the
/// reports.
fn sweep(name: &str, n: usize, build: impl Fn(u64) -> Scenario) -> Vec<Report> {
    let started = std::time::Instant::now();
    let mut slowest = (0, 0);
    let reports: Vec<Report> = (0..seeds())
        .map(|seed| {
            let scenario = build(seed);
            assert_eq!(scenario.behaviors.len(), n);
            let report =
                run(&scenario).unwrap_or_else(|v| panic!("{name}, n = {n}, seed {seed}: {v}"));
            let progress = report.live_at_ms.unwrap_or(scenario.duration_ms)
                - scenario.liveness.map_or(0, |l| l.from_ms);
            slowest = slowest.max((progress, seed));
            report
        })
        .collect();
    println!(
        "{name}, n = {n}: {} seeds in {:?}; slowest progress {} ms (seed {})",
        reports.len(),
        started.elapsed(),
        slowest.0,
        slowest.1
    );
    reports
}

fn f(n: usize) -> usize {
    (n - 1) / 3
}

/// `f` randomly placed validators with `behavior`.
fn byzantine(n: usize, seed: u64, behavior: Behavior) -> Scenario {
    let mut scenario = Scenario::new(n, seed);
    for i in Rng::new(seed ^ 0xb42).pick(n, f(n)) {
        scenario.behaviors[i as usize] = behavior;
    }
    scenario
}

// No faults: 20-50 ms links, 400 ms base timeout. Every node must finalize 10 heights within
// 2 s.
fn no_faults(n: usize) {
    sweep("no faults", n, |seed| {
        let mut s = Scenario::new(n, seed);
        s.duration_ms = 2_000;
        s
    });
}

#[test]
fn no_faults_4() {
    no_faults(4);
}

#[test]
fn no_faults_7() {
    no_faults(7);
}

// 10-100 ms links losing 10% of messages (proposals, votes, certificates and block
// fetches): every node must finalize 8 heights within 6 s.
fn lossy(n: usize) {
    sweep("latency, jitter and loss", n, |seed| {
        let mut s = Scenario::new(n, seed);
        s.latency_ms = 10;
        s.jitter_ms = 90;
        s.loss_per_mille = 100;
        s.duration_ms = 6_000;
        s.liveness = Some(Liveness {
            from_ms: 0,
            min_heights: 8,
        });
        s
    });
}

#[test]
fn lossy_4() {
    lossy(4);
}

#[test]
fn lossy_7() {
    lossy(7);
}

// A random cut of the network from 300 ms to 1300 ms; on the smaller side there is no
// quorum, and when the larger side has none either nothing is finalized. After healing every
// node must finalize 5 heights beyond anything finalized before, within 3 s.
fn partition(n: usize) {
    sweep("partition", n, |seed| {
        let mut rng = Rng::new(seed ^ 0x9a27);
        let size = 1 + rng.below(n as u64 / 2) as usize;
        let mut s = Scenario::new(n, seed);
        s.partitions.push(Partition {
            from_ms: 300,
            heal_ms: 1_300,
            side: rng.pick(n, size),
        });
        s.duration_ms = 4_300;
        s.liveness = Some(Liveness {
            from_ms: 1_300,
            min_heights: 5,
        });
        s
    });
}

#[test]
fn partition_4() {
    partition(4);
}

#[test]
fn partition_7() {
    partition(7);
}

// Up to f random nodes crash at random times and restart 100-800 ms later from their WAL and
// last finalized block; every fourth seed crashes all nodes instead (no progress until they
// are back, then recovery from the WALs alone). All restarts are done by 1.8 s; from then
// every node must finalize 5 new heights within 3.5 s.
fn crash_restart(n: usize) {
    sweep("crash and restart", n, |seed| {
        let mut rng = Rng::new(seed ^ 0xc4a5);
        let count = if seed % 4 == 3 {
            n
        } else {
            1 + rng.below(f(n) as u64) as usize
        };
        let mut s = Scenario::new(n, seed);
        for node in rng.pick(n, count) {
            let at_ms = 200 + rng.below(800);
            s.crashes.push(Crash {
                node,
                at_ms,
                restart_ms: at_ms + 100 + rng.below(700),
            });
        }
        s.duration_ms = 5_300;
        s.liveness = Some(Liveness {
            from_ms: 1_800,
            min_heights: 5,
        });
        s
    });
}

#[test]
fn crash_restart_4() {
    crash_restart(4);
}

#[test]
fn crash_restart_7() {
    crash_restart(7);
}

// The leader of a view between 3 and 10 crashes while sending its proposal (after persisting
// it) and restarts 300-1000 ms later; it must not propose anything else for that view. Every
// node must finalize 5 new heights between 1.5 s and 4 s.
fn leader_crash(n: usize) {
    sweep("leader crash", n, |seed| {
        let mut rng = Rng::new(seed ^ 0x1eade);
        let mut s = Scenario::new(n, seed);
        s.leader_crashes.push(LeaderCrash {
            view: 3 + rng.below(8),
            down_ms: 300 + rng.below(700),
        });
        s.duration_ms = 4_000;
        s.liveness = Some(Liveness {
            from_ms: 1_500,
            min_heights: 5,
        });
        s
    });
}

#[test]
fn leader_crash_4() {
    leader_crash(4);
}

#[test]
fn leader_crash_7() {
    leader_crash(7);
}

/// Byzantine scenarios: `f` nodes of one kind; every honest node must finalize 8 heights
/// within 5 s. Views led by the faulty nodes fail and each consecutive failure lengthens the
/// next timeout (400 ms, then 600 ms), which is most of that time.
fn byzantine_sweep(name: &str, n: usize, behavior: Behavior) -> Vec<Report> {
    sweep(name, n, |seed| {
        let mut s = byzantine(n, seed, behavior);
        s.duration_ms = 5_000;
        s.liveness = Some(Liveness {
            from_ms: 0,
            min_heights: 8,
        });
        s
    })
}

#[test]
fn equivocating_leader_4() {
    let reports = byzantine_sweep("equivocating leader", 4, Behavior::Equivocator);
    assert!(reports.iter().all(|r| !r.evidence.is_empty()));
}

#[test]
fn equivocating_leader_7() {
    let reports = byzantine_sweep("equivocating leader", 7, Behavior::Equivocator);
    assert!(reports.iter().all(|r| !r.evidence.is_empty()));
}

#[test]
fn double_voter_4() {
    let reports = byzantine_sweep("double voter", 4, Behavior::DoubleVoter);
    assert!(reports.iter().all(|r| !r.evidence.is_empty()));
}

#[test]
fn double_voter_7() {
    let reports = byzantine_sweep("double voter", 7, Behavior::DoubleVoter);
    assert!(reports.iter().all(|r| !r.evidence.is_empty()));
}

#[test]
fn silent_4() {
    byzantine_sweep("silent", 4, Behavior::Silent);
}

#[test]
fn silent_7() {
    byzantine_sweep("silent", 7, Behavior::Silent);
}

#[test]
fn withholding_4() {
    byzantine_sweep("withholding", 4, Behavior::Withholder);
}

#[test]
fn withholding_7() {
    byzantine_sweep("withholding", 7, Behavior::Withholder);
}

#[test]
fn invalid_proposer_4() {
    byzantine_sweep("invalid proposer", 4, Behavior::InvalidProposer);
}

#[test]
fn invalid_proposer_7() {
    byzantine_sweep("invalid proposer", 7, Behavior::InvalidProposer);
}

#[test]
fn forking_leader_4() {
    byzantine_sweep("forking leader", 4, Behavior::Forker);
}

#[test]
fn forking_leader_7() {
    byzantine_sweep("forking leader", 7, Behavior::Forker);
}

// One equivocating leader and one double voter together, on links losing 5% of messages:
// every honest node must finalize 8 heights within 6 s.
#[test]
fn mixed_byzantine_7() {
    let reports = sweep("equivocator, double voter and loss", 7, |seed| {
        let mut s = Scenario::new(7, seed);
        let faulty = Rng::new(seed ^ 0x313).pick(7, 2);
        s.behaviors[faulty[0] as usize] = Behavior::Equivocator;
        s.behaviors[faulty[1] as usize] = Behavior::DoubleVoter;
        s.loss_per_mille = 50;
        s.duration_ms = 6_000;
        s.liveness = Some(Liveness {
            from_ms: 0,
            min_heights: 8,
        });
        s
    });
    assert!(reports.iter().all(|r| !r.evidence.is_empty()));
}

#[test]
fn same_seed_same_trace() {
    let build = |seed| {
        let mut s = byzantine(7, seed, Behavior::Equivocator);
        s.loss_per_mille = 50;
        s.duration_ms = 1_500;
        s.liveness = None;
        s
    };
    let a = run(&build(7)).unwrap();
    let b = run(&build(7)).unwrap();
    assert_eq!(a, b);
    let traces: std::collections::BTreeSet<[u8; 32]> = (0..8)
        .map(|seed| run(&build(seed)).unwrap().trace)
        .collect();
    assert_eq!(traces.len(), 8);
}
