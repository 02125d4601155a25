//! Latencies of the harness in an HDR histogram: bounded memory however long the run (a soak of
//! hours records as much as one of seconds), percentiles within 0.1 % of the recorded value.
#![allow(dead_code)]

use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Recorded latencies in microseconds, shared by the clients that record them.
#[derive(Debug)]
pub struct Latencies(Mutex<Histogram<u64>>);

impl Default for Latencies {
    fn default() -> Latencies {
        // Three significant figures; the range grows with the largest value recorded.
        Latencies(Mutex::new(
            Histogram::new(3).expect("3 significant figures are supported"),
        ))
    }
}

impl Latencies {
    /// Records one latency, in microseconds.
    pub fn record(&self, us: u64) {
        // Auto-resizing: a value past the range widens it, so recording cannot fail.
        let _ = self.0.lock().unwrap().record(us);
    }

    /// How many were recorded.
    pub fn len(&self) -> u64 {
        self.0.lock().unwrap().len()
    }

    /// The `q`th quantile (0.0 to 1.0) in milliseconds, 0 when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let h = self.0.lock().unwrap();
        if h.is_empty() {
            return 0.0;
        }
        h.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest in milliseconds (0 when nothing was recorded).
    pub fn max_ms(&self) -> f64 {
        let h = self.0.lock().unwrap();
        if h.is_empty() {
            return 0.0;
        }
        h.max() as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn quantiles_are_within_a_thousandth_of_the_recorded_values() {
        let l = Latencies::default();
        assert_eq!((l.len(), l.quantile_ms(0.99), l.max_ms()), (0, 0.0, 0.0));
        for us in 1..=10_000 {
            l.record(us * 100);
        }
        assert_eq!(l.len(), 10_000);
        let near = |got: f64, want: f64| (got - want).abs() <= want / 1000.0;
        assert!(near(l.quantile_ms(0.5), 500.0), "{}", l.quantile_ms(0.5));
        assert!(near(l.quantile_ms(0.99), 990.0), "{}", l.quantile_ms(0.99));
        assert!(near(l.max_ms(), 1000.0), "{}", l.max_ms());
        // Far past the first values' range: the histogram widens instead of dropping it.
        l.record(3_600_000_000);
        assert!(near(l.max_ms(), 3_600_000.0), "{}", l.max_ms());
    }
}
