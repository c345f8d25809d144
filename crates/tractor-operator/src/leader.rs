//! Lease-based leader election (coordination.k8s.io/v1), so two operator replicas can run and one acts.
//!
//! The leader renews every [`RENEW`]; a follower takes over once a lease has gone unrenewed for its whole
//! duration. A leader that cannot renew within the duration stops acting (the process exits, and its pod
//! restarts as a follower), so two leaders never act for long.
//!
//! Ours, not a crate: the maintained Lease crates trail kube's major versions (kube-lease-manager 0.12 needs
//! kube 4 and k8s-openapi 0.28, and k8s-openapi may appear only once in a build), and this is 150 lines.
#![allow(clippy::disallowed_methods)] // the leader Lease is read and renewed outside any reconcile

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

use crate::error::{Error, call};
use crate::rbac;

/// Seconds a lease stays valid without renewal (client-go's default).
const LEASE_SECONDS: i32 = 15;
/// How often the leader renews.
const RENEW: Duration = Duration::from_secs(5);

/// An elector for one lease.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
}

impl Elector {
    /// An elector for lease `name` in `namespace`, acting as `identity`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity,
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            if self.try_acquire().await? {
                info!(lease = %self.name, identity = %self.identity, "became leader");
                return Ok(());
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// Renews the lease until it is lost; returns when leadership is gone.
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            match self.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.name, "lease taken by another replica");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "could not renew lease");
                    if last_renewed.elapsed() >= Duration::from_secs(LEASE_SECONDS as u64) {
                        return;
                    }
                }
            }
        }
    }

    /// One attempt: create, renew or take over an expired lease. Optimistic concurrency on
    /// `resourceVersion` makes simultaneous takeovers safe: one replace wins, the other gets 409.
    async fn try_acquire(&self) -> Result<bool, Error> {
        let now = crate::clock::now();
        let Some(mut lease) = call(
            rbac::GET_LEASE,
            &self.namespace,
            self.api.get_opt(&self.name),
        )
        .await?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match call(
                rbac::CREATE_LEASE,
                &self.namespace,
                self.api.create(&PostParams::default(), &lease),
            )
            .await
            {
                Ok(_) => Ok(true),
                Err(Error::Api {
                    source: kube::Error::Api(s),
                    ..
                }) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec
            .renew_time
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
        let expired = now.as_second() - renewed.as_second() > duration;
        if holder != self.identity && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let (acquired, transitions) = if holder == self.identity {
            (
                spec.acquire_time.map(|t| t.0).unwrap_or(now),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        match call(
            rbac::RENEW_LEASE,
            &self.namespace,
            self.api.replace(&self.name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
