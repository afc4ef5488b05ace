//! The API's settings that a reload changes, and what its receivers
//! announce to the forward targets.

use std::sync::atomic::Ordering;

use crate::config::Config;

/// The API's settings that a reload changes in place.
pub(super) struct Live {
    pub(super) judging: crate::store::Judging,
    /// The dates a bounce may claim; others are dated on arrival.
    pub(super) bounce_times: crate::bounce::TimeRange,
    /// The bearer token write endpoints require; writes are refused when
    /// none is configured.
    pub(super) token: Option<String>,
    pub(super) sns_subscribe_allow: Vec<String>,
    pub(super) sns_verify_signatures: bool,
    pub(super) sns_topics: Vec<String>,
    pub(super) sns_signing_cert_base: Option<String>,
    pub(super) sns_trust: crate::sns::Trust,
}

impl Live {
    pub(super) fn of(config: &Config) -> Live {
        Live {
            judging: config.judging(),
            bounce_times: config.bounce_times,
            token: config.api_token.clone(),
            sns_subscribe_allow: config.sns_subscribe_allow.clone(),
            sns_verify_signatures: config.sns_verify_signatures,
            sns_topics: config.sns_topics.clone(),
            sns_signing_cert_base: config.sns_signing_cert_base.clone(),
            sns_trust: config.sns_trust.clone(),
        }
    }
}

/// What bounces in over HTTP are announced for: each new bounce (for
/// `listmonk` and `json` forward targets), and the request whole (for
/// `passthrough` ones).
#[derive(Debug, Default)]
pub struct Announce {
    bounces: std::sync::atomic::AtomicBool,
    requests: std::sync::atomic::AtomicBool,
}

impl Announce {
    /// Sets both, as [`crate::forward::Setup::wants`] says.
    pub fn set(&self, (bounces, requests): (bool, bool)) {
        self.bounces.store(bounces, Ordering::Relaxed);
        self.requests.store(requests, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> (bool, bool) {
        (
            self.bounces.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }
}
