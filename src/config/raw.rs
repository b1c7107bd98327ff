//! `rollgate.toml` as serde reads it, before any check: the keys, their
//! defaults, and nothing else. `model.rs` turns this into a checked
//! `Config`. Unknown keys are errors (`deny_unknown_fields`).

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config::model::OnFailure;
use crate::config::rollout::{RawSize, Strategy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// Moved to the server's policy: read only to say so.
    pub(super) branch: Option<toml::Spanned<serde::de::IgnoredAny>>,
    pub(super) default_group: Option<String>,
    #[serde(default)]
    pub(super) on_failure: OnFailure,
    #[serde(default = "default_lock_wait", with = "humantime_serde")]
    pub(super) lock_wait: Duration,
    /// Moved to the server's policy: read only to say so.
    pub(super) pusher_env: Option<toml::Spanned<serde::de::IgnoredAny>>,
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub(super) heartbeat: Duration,
    #[serde(default)]
    pub(super) services: IndexMap<String, RawService>,
    #[serde(default)]
    pub(super) groups: IndexMap<String, RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) source: String,
    pub(super) check: Vec<String>,
    pub(super) deploy: Vec<String>,
    pub(super) verify: Option<Vec<String>>,
    pub(super) arm: Option<Vec<String>>,
    pub(super) reload: Option<Vec<String>>,
    pub(super) health: Option<Vec<String>>,
    pub(super) disarm: Option<Vec<String>>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub(super) timeout: Duration,
    #[serde(default = "default_health_wait", with = "humantime_serde")]
    pub(super) health_wait: Duration,
    pub(super) target: Option<String>,
    #[serde(default)]
    pub(super) strict: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) hosts: Vec<String>,
    #[serde(default)]
    pub(super) vars: BTreeMap<String, String>,
    pub(super) batch: Option<usize>,
    pub(super) services: Option<Vec<String>>,
    #[serde(default)]
    pub(super) rollout: Strategy,
    pub(super) waves: Option<Vec<RawSize>>,
    #[serde(default, with = "humantime_serde")]
    pub(super) bake: Option<Duration>,
    pub(super) max_failures: Option<RawSize>,
}

fn default_lock_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(20)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_health_wait() -> Duration {
    Duration::from_secs(10)
}
