//! Summary statistics over a handful of runs: min, median, max.
//!
//! Boot runs are few (10–30) and the machines are noisy, so the median is the
//! number to compare; means and standard deviations would be pulled around by
//! the one run that a neighbour's build preempted.

use serde::Serialize;

/// Min, median and max of a sample, in the sample's unit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Smallest value.
    pub min: f64,
    /// Median: the middle value, or the mean of the two middle values when
    /// `n` is even.
    pub median: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values`; `None` when there are none. NaNs are ignored.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            n,
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }
}

/// `a / b`, or `None` when `b` is zero or either is missing.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn odd_count_takes_the_middle() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.n, s.min, s.median, s.max), (3, 1.0, 3.0, 5.0));
    }

    #[test]
    fn even_count_averages_the_middle_two() {
        let s = Summary::of(&[4.0, 1.0, 2.0, 100.0]).unwrap();
        assert_eq!((s.n, s.min, s.median, s.max), (4, 1.0, 3.0, 100.0));
    }

    #[test]
    fn single_value() {
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn nans_are_ignored() {
        let s = Summary::of(&[f64::NAN, 2.0, 4.0]).unwrap();
        assert_eq!((s.n, s.median), (2, 3.0));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }
}
