//! Pass bisection for a kernel whose compiled results differ from the reference: re-runs it
//! with each optimising pass of `passes::optimising()` disabled in turn (through
//! `PassOptions.disabled`) and reports which pass's absence fixes it. A failure message
//! that already names the guilty pass saves the first hour of every miscompile hunt.

use super::{run_case, Outcome};
use tessera::passes::{self, PassOptions};

/// What bisection found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel matches with every pass enabled: there is nothing to bisect.
    NoMismatch,
    /// Disabling any one of these passes (in pipeline order) makes the kernel match.
    PointsAt(Vec<String>),
    /// The failure (mismatch or compile error) stays whichever single optimising pass is
    /// disabled.
    NoSinglePass,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::NoMismatch => {
                write!(f, "no mismatch with every pass enabled; nothing to bisect")
            }
            Verdict::PointsAt(names) => {
                write!(f, "miscompile points at pass `{}`", names[0])?;
                if names.len() > 1 {
                    let rest: Vec<_> = names[1..].iter().map(|n| format!("`{n}`")).collect();
                    write!(f, " (disabling {} also fixes it)", rest.join(", "))?;
                }
                Ok(())
            }
            Verdict::NoSinglePass => write!(
                f,
                "no single optimising pass: the failure remains with each of {} disabled",
                optimising_names()
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The names of the optimising passes, in pipeline order.
pub fn optimising_names() -> Vec<String> {
    passes::optimising().map(|p| p.name.to_string()).collect()
}

/// Bisects with any runner: `matches(disabled)` runs the kernel with those passes
/// disabled and says whether every output matched the reference.
pub fn bisect_with(mut matches: impl FnMut(&[String]) -> bool) -> Verdict {
    if matches(&[]) {
        return Verdict::NoMismatch;
    }
    let fixed: Vec<String> = optimising_names()
        .into_iter()
        .filter(|name| matches(std::slice::from_ref(name)))
        .collect();
    if fixed.is_empty() {
        Verdict::NoSinglePass
    } else {
        Verdict::PointsAt(fixed)
    }
}

/// Bisects a kernel source run with `driver::random_tensor` inputs of `seed`; `base`
/// holds the other pass options (e.g. the dtype policy) kept for every run.
pub fn bisect(text: &str, base: &PassOptions, seed: u64) -> Verdict {
    bisect_with(|disabled| {
        let options = PassOptions {
            disabled: disabled.to_vec(),
            ..base.clone()
        };
        matches!(run_case(text, &options, seed), Outcome::Match)
    })
}
