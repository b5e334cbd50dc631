//! The arithmetic of the reports: nearest-rank percentiles and the slope of
//! memory against connections. Pure functions, so that they are tested.

/// The `p`-th percentile (0 < p ≤ 100) of `sorted`, by nearest rank: the
/// smallest value with at least p% of the values at or below it. `None` when
/// there are no values.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // ceil(p × n / 100) in integers: no float rounding at the boundaries.
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}

/// p50, p90, p99 and the maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Summary {
    /// Sorts `samples` in place; `None` when there are none.
    pub fn of(samples: &mut [u64]) -> Option<Summary> {
        samples.sort_unstable();
        Some(Summary {
            count: samples.len(),
            p50: percentile(samples, 50)?,
            p90: percentile(samples, 90)?,
            p99: percentile(samples, 99)?,
            max: *samples.last()?,
        })
    }
}

/// The least-squares slope of y against x. `None` with fewer than two points
/// or when every x is the same.
pub fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The slope between the first and the last point.
pub fn two_point_slope(points: &[(f64, f64)]) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    let dx = last.0 - first.0;
    (dx != 0.0).then(|| (last.1 - first.1) / dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[7], 100), Some(7));
        // The textbook example: 15, 20, 35, 40, 50.
        let five = [15, 20, 35, 40, 50];
        assert_eq!(percentile(&five, 5), Some(15));
        assert_eq!(percentile(&five, 30), Some(20));
        assert_eq!(percentile(&five, 40), Some(20));
        assert_eq!(percentile(&five, 50), Some(35));
        assert_eq!(percentile(&five, 100), Some(50));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 50), Some(5));
        assert_eq!(percentile(&ten, 90), Some(9));
        assert_eq!(percentile(&ten, 99), Some(10));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 99), Some(99));
        assert_eq!(percentile(&hundred, 100), Some(100));
    }

    #[test]
    fn summary_sorts_first() {
        assert_eq!(Summary::of(&mut []), None);
        let mut samples = vec![9, 1, 5, 3, 7, 2, 8, 4, 6, 10];
        assert_eq!(
            Summary::of(&mut samples),
            Some(Summary {
                count: 10,
                p50: 5,
                p90: 9,
                p99: 10,
                max: 10
            })
        );
    }

    #[test]
    fn slopes() {
        assert_eq!(least_squares_slope(&[]), None);
        assert_eq!(least_squares_slope(&[(1.0, 2.0)]), None);
        assert_eq!(least_squares_slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
        // Exactly on a line: 1000 bytes per connection over a 5 MB base.
        let line: Vec<(f64, f64)> = [1000.0, 2000.0, 5000.0, 10000.0]
            .iter()
            .map(|&x| (x, 5e6 + 1000.0 * x))
            .collect();
        assert!((least_squares_slope(&line).unwrap() - 1000.0).abs() < 1e-9);
        assert!((two_point_slope(&line).unwrap() - 1000.0).abs() < 1e-9);
        // Off the line, the two differ: (0,0), (1,3), (2,2).
        let bent = [(0.0, 0.0), (1.0, 3.0), (2.0, 2.0)];
        assert!((least_squares_slope(&bent).unwrap() - 1.0).abs() < 1e-9);
        assert!((two_point_slope(&bent).unwrap() - 1.0).abs() < 1e-9);
        let bent = [(0.0, 0.0), (1.0, 0.0), (3.0, 6.0)];
        // mean x 4/3, mean y 2; sxy = 10, sxx = 14/3.
        assert!((least_squares_slope(&bent).unwrap() - 30.0 / 14.0).abs() < 1e-9);
        assert!((two_point_slope(&bent).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(two_point_slope(&[]), None);
        assert_eq!(two_point_slope(&[(2.0, 1.0)]), None);
    }
}
