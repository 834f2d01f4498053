//! Fault injection for upload requests: the [`Fault`] kinds, the seeded
//! [`RandomFaults`], and the script-then-random order in which requests draw
//! them. It decides which fault a request gets; applying it is the upload
//! handler's job. Imports nothing from the product.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault to inject into one upload request.
///
/// JSON: `"status503"`, `"reset_mid_body"`, `"lost_reply"`,
/// `{"latency": "250ms"}` (a humantime string, or a number of milliseconds),
/// `{"reject": "<slug>"}`, `"garbage_reply"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Read (and discard) the body, then answer 503.
    Status503,
    /// Read part of the body, then drop the connection.
    ResetMidBody,
    /// Store the chunk, then drop the connection without replying.
    LostReply,
    /// Wait this long before handling the request.
    Latency(#[serde(with = "latency_serde")] Duration),
    /// Read (and discard) the body, then answer with this catalogue error
    /// (its slug, e.g. `"uploaded-file-invalid-file"`): a permanent refusal.
    Reject(String),
    /// Handle the request normally (store the chunk), then answer with its
    /// status but a body that is not JSON (a misbehaving proxy).
    GarbageReply,
}

/// Random faults applied to every upload request the script does not cover.
/// The draws come from an RNG seeded with `seed` (reset by every
/// `set_random_faults`), so a run is reproducible.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RandomFaults {
    pub seed: u64,
    pub p_503: f64,
    pub p_reset: f64,
    pub p_lost_reply: f64,
}

pub(crate) struct FaultState {
    pub(crate) script: VecDeque<Option<Fault>>,
    random: RandomFaults,
    rng: fastrand::Rng,
}

impl Default for FaultState {
    fn default() -> FaultState {
        FaultState {
            script: VecDeque::new(),
            random: RandomFaults::default(),
            rng: fastrand::Rng::with_seed(0),
        }
    }
}

impl FaultState {
    pub(crate) fn set_random(&mut self, random: RandomFaults) {
        self.rng = fastrand::Rng::with_seed(random.seed);
        self.random = random;
    }

    pub(crate) fn next(&mut self) -> Option<Fault> {
        if let Some(entry) = self.script.pop_front() {
            return entry;
        }
        let r = &self.random;
        if r.p_503 <= 0.0 && r.p_reset <= 0.0 && r.p_lost_reply <= 0.0 {
            return None;
        }
        let x = self.rng.f64();
        if x < r.p_503 {
            Some(Fault::Status503)
        } else if x < r.p_503 + r.p_reset {
            Some(Fault::ResetMidBody)
        } else if x < r.p_503 + r.p_reset + r.p_lost_reply {
            Some(Fault::LostReply)
        } else {
            None
        }
    }
}

/// `Fault::Latency` as a humantime string (`"250ms"`); also reads a number
/// of milliseconds.
mod latency_serde {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(LatencyVisitor)
    }

    struct LatencyVisitor;

    impl Visitor<'_> for LatencyVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"250ms\" or a number of milliseconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_millis)
                .map_err(|_| E::custom("negative latency"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json() {
        let script: Vec<Option<Fault>> = serde_json::from_str(
            r#"[null, "status503", "reset_mid_body", "lost_reply", {"latency": "250ms"}, {"latency": 40}]"#,
        )
        .unwrap();
        assert_eq!(
            script,
            vec![
                None,
                Some(Fault::Status503),
                Some(Fault::ResetMidBody),
                Some(Fault::LostReply),
                Some(Fault::Latency(Duration::from_millis(250))),
                Some(Fault::Latency(Duration::from_millis(40))),
            ]
        );
        assert_eq!(
            serde_json::to_string(&Fault::Latency(Duration::from_millis(250))).unwrap(),
            r#"{"latency":"250ms"}"#
        );
        assert_eq!(
            serde_json::to_string(&Fault::Status503).unwrap(),
            r#""status503""#
        );
    }

    #[test]
    fn script_then_seeded_random() {
        let mut f = FaultState::default();
        f.script.extend([Some(Fault::LostReply), None]);
        assert_eq!(f.next(), Some(Fault::LostReply));
        assert_eq!(f.next(), None);
        assert_eq!(f.next(), None);
        let random = RandomFaults {
            seed: 7,
            p_503: 0.3,
            p_reset: 0.3,
            p_lost_reply: 0.3,
        };
        f.set_random(random.clone());
        let a: Vec<_> = (0..50).map(|_| f.next()).collect();
        f.set_random(random);
        let b: Vec<_> = (0..50).map(|_| f.next()).collect();
        assert_eq!(a, b);
        assert!(a.contains(&Some(Fault::Status503)));
        assert!(a.contains(&Some(Fault::ResetMidBody)));
        assert!(a.contains(&Some(Fault::LostReply)));
        assert!(a.contains(&None));
    }
}
