//! When a scenario test may run a scenario again: only for a failure that
//! [`crate::RunReport::environment_failure`] explains with each failed
//! boot's own evidence, and at most [`RERUN_BUDGET`] times per test.

/// Reruns allowed per scenario test. The environment fails a few times per
/// hundred 2-vCPU guest boots (docs/RIG.md, "The emulated host"), so a
/// 10-boot scenario meets it in a few runs of a hundred; twice in a row
/// would be rare enough to mean something else is wrong.
pub const RERUN_BUDGET: u32 = 1;

/// What to do after one run of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The run passed.
    Pass,
    /// The run failed and the environment does not explain it: fail now.
    Fail,
    /// The environment failed (the evidence): run again; this is rerun `n`.
    Rerun { n: u32, evidence: String },
    /// The environment failed again with the budget spent: fail, with the evidence.
    BudgetSpent { evidence: String },
}

/// Decides after a run: `passed`, the environment's evidence if the run
/// failed because of it, and the reruns done so far.
pub fn next(passed: bool, environment: Option<String>, reruns: u32, budget: u32) -> Next {
    match (passed, environment) {
        (true, _) => Next::Pass,
        (false, None) => Next::Fail,
        (false, Some(evidence)) if reruns < budget => Next::Rerun {
            n: reruns + 1,
            evidence,
        },
        (false, Some(evidence)) => Next::BudgetSpent { evidence },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reruns_only_for_explained_failures_within_the_budget() {
        let why = || Some("boot 4: inside kvm_amd".to_string());
        assert_eq!(next(true, why(), 0, 1), Next::Pass);
        assert_eq!(next(false, None, 0, 1), Next::Fail);
        assert_eq!(
            next(false, why(), 0, 1),
            Next::Rerun {
                n: 1,
                evidence: why().unwrap()
            }
        );
        assert_eq!(
            next(false, why(), 1, 1),
            Next::BudgetSpent {
                evidence: why().unwrap()
            }
        );
        assert_eq!(
            next(false, why(), 0, 0),
            Next::BudgetSpent {
                evidence: why().unwrap()
            }
        );
    }
}
