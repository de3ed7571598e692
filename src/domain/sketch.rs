//! A mergeable duration sketch for percentiles: a fixed logarithmic histogram whose buckets grow
//! by a factor γ = (1 + α) / (1 − α), α = 1 %. Any quantile read from it is within α of the exact
//! value (relative), it merges by adding counts (so hourly sketches combine into any window),
//! and its size depends on the spread of durations, not on how many were added.
//!
//! Its byte form (stored in rollup rows) is a sequence of LEB128 varints; decoding checks every
//! length and never panics on foreign bytes.

use std::collections::BTreeMap;

/// Relative accuracy of every quantile.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Refuse to decode sketches with more buckets than any real one can have.
const MAX_BUCKETS: usize = 1 << 16;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// Counts of durations (milliseconds) in logarithmic buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurationSketch {
    /// Durations of 0 ms (and anything below 1 ms).
    zero: u64,
    /// Bucket index → count; bucket `i` holds values in (γ^(i−1), γ^i].
    buckets: BTreeMap<i32, u64>,
}

impl DurationSketch {
    pub fn add(&mut self, duration_ms: f64) {
        if duration_ms.is_nan() || duration_ms < 1.0 || duration_ms.is_infinite() {
            self.zero = self.zero.saturating_add(1);
            return;
        }
        let index = (duration_ms.ln() / gamma().ln()).ceil() as i32;
        let count = self.buckets.entry(index).or_insert(0);
        *count = count.saturating_add(1);
    }

    pub fn merge(&mut self, other: &DurationSketch) {
        self.zero = self.zero.saturating_add(other.zero);
        for (&index, &count) in &other.buckets {
            let slot = self.buckets.entry(index).or_insert(0);
            *slot = slot.saturating_add(count);
        }
    }

    /// Adds an encoded sketch into this one without building it first.
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        let other = DurationSketch::decode(bytes)?;
        self.merge(&other);
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().fold(self.zero, |sum, c| sum.saturating_add(*c))
    }

    /// The value at rank ⌊q·(n−1)⌋ of the sorted durations, within [`RELATIVE_ACCURACY`];
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        if rank < self.zero {
            return Some(0.0);
        }
        let mut seen = self.zero;
        for (&index, &count) in &self.buckets {
            seen = seen.saturating_add(count);
            if rank < seen {
                let g = gamma();
                return Some(2.0 * g.powi(index) / (g + 1.0));
            }
        }
        None
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.buckets.len() * 3);
        put_varint(&mut out, self.zero);
        put_varint(&mut out, self.buckets.len() as u64);
        let mut previous = 0i64;
        for (&index, &count) in &self.buckets {
            let delta = i64::from(index) - previous;
            put_varint(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
            put_varint(&mut out, count);
            previous = i64::from(index);
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<DurationSketch, &'static str> {
        let zero = get_varint(&mut bytes)?;
        let len = usize::try_from(get_varint(&mut bytes)?).map_err(|_| "too many buckets")?;
        if len > MAX_BUCKETS {
            return Err("too many buckets");
        }
        let mut buckets = BTreeMap::new();
        let mut index = 0i64;
        for _ in 0..len {
            let zigzag = get_varint(&mut bytes)?;
            let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
            index = index.checked_add(delta).ok_or("bucket index overflow")?;
            let key = i32::try_from(index).map_err(|_| "bucket index out of range")?;
            buckets.insert(key, get_varint(&mut bytes)?);
        }
        if !bytes.is_empty() {
            return Err("trailing bytes");
        }
        Ok(DurationSketch { zero, buckets })
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("truncated sketch")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(sorted: &[u64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize] as f64
    }

    proptest! {
        /// Every quantile is within 2 % (the bound; the design gives 1 %) of the exact one.
        #[test]
        fn quantiles_are_within_relative_accuracy(
            mut values in proptest::collection::vec(0u64..2_600_000_000, 1..2000),
            q in 0.0f64..=1.0,
        ) {
            let mut sketch = DurationSketch::default();
            for v in &values {
                sketch.add(*v as f64);
            }
            values.sort_unstable();
            let truth = exact(&values, q);
            let estimate = sketch.quantile(q).expect("non-empty");
            if truth == 0.0 {
                prop_assert_eq!(estimate, 0.0);
            } else {
                prop_assert!((estimate - truth).abs() / truth <= RELATIVE_ACCURACY + 1e-9, "q {q}: {estimate} vs {truth}");
            }
        }

        #[test]
        fn merge_equals_adding_everything_to_one(
            a in proptest::collection::vec(0u64..100_000_000, 0..300),
            b in proptest::collection::vec(0u64..100_000_000, 0..300),
        ) {
            let (mut left, mut right, mut all) = (DurationSketch::default(), DurationSketch::default(), DurationSketch::default());
            for v in &a { left.add(*v as f64); all.add(*v as f64); }
            for v in &b { right.add(*v as f64); all.add(*v as f64); }
            left.merge(&right);
            prop_assert_eq!(left, all);
        }

        #[test]
        fn encoding_round_trips(values in proptest::collection::vec(0u64..u64::MAX, 0..300)) {
            let mut sketch = DurationSketch::default();
            for v in &values { sketch.add(*v as f64); }
            prop_assert_eq!(DurationSketch::decode(&sketch.encode()), Ok(sketch));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(sketch) = DurationSketch::decode(&bytes) {
                let _ = sketch.quantile(0.5);
                let _ = sketch.count();
            }
        }
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(DurationSketch::default().quantile(0.5), None);
        let mut sketch = DurationSketch::default();
        sketch.add(0.0);
        sketch.add(f64::NAN);
        assert_eq!(sketch.quantile(0.99), Some(0.0));
        assert_eq!(sketch.count(), 2);
    }
}
