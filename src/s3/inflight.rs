//! Uploads in flight: how many writes (PUT, UploadPart, copies, completions) may be between
//! admission and answer at once, gateway-wide and per tenant. One tenant's slow or stuck
//! uploads then cost every other tenant nothing but their share: beyond either bound a write is
//! refused at once with `503 SlowDown`, before its body is read or anything is reserved.
//!
//! Also the bounds of what open multipart uploads may hold per tenant (uploads, part records),
//! checked against the counters the commits maintain, and the per-tenant lane in which
//! CreateMultipartUpload counts and creates: one tenant at its bound waits only on itself.

use std::sync::Arc;

use s3s::{S3Error, S3ErrorCode};

use crate::limit::{Full, Limit, Permit};

/// The bounds (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Writes in flight on this gateway.
    pub in_flight: usize,
    /// Writes in flight of one tenant.
    pub tenant_in_flight: usize,
    /// Open multipart uploads of one tenant.
    pub open_per_tenant: usize,
    /// Part records of one tenant's open uploads (an empty part costs a record too).
    pub parts_per_tenant: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            in_flight: 1024,
            tenant_in_flight: 128,
            open_per_tenant: 10_000,
            parts_per_tenant: 100_000,
        }
    }
}

pub struct InFlight {
    limits: UploadLimits,
    writes: Arc<Limit<String>>,
    /// Per tenant: "count the open uploads, then create one", one at a time.
    upload_lanes: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// One admitted write; its place is given back when dropped (answered, failed or cancelled).
pub type Ticket = Permit<String>;

impl InFlight {
    pub fn new(limits: UploadLimits) -> Self {
        Self {
            writes: Limit::new(limits.in_flight, limits.tenant_in_flight),
            limits,
            upload_lanes: std::sync::Mutex::default(),
        }
    }

    /// The tenant's lane for creating multipart uploads (held across count and commit, so a
    /// node never lets one tenant past its bound; across nodes the bound may be passed by one
    /// upload per node).
    pub(crate) async fn upload_lane(&self, tenant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lane = {
            let mut lanes = self.upload_lanes.lock().unwrap_or_else(|e| e.into_inner());
            lanes.entry(tenant.to_string()).or_default().clone()
        };
        lane.lock_owned().await
    }

    pub(crate) fn limits(&self) -> &UploadLimits {
        &self.limits
    }

    /// Writes of `tenant` between admission and answer now.
    pub fn of(&self, tenant: &str) -> usize {
        self.writes.held(&tenant.to_string())
    }

    /// Writes between admission and answer now, in all.
    pub fn total(&self) -> usize {
        self.writes.held_total()
    }

    pub(crate) fn enter(&self, tenant: &str) -> Result<Ticket, S3Error> {
        let full = |msg: String| {
            crate::error::with_status(
                S3ErrorCode::SlowDown,
                http::StatusCode::SERVICE_UNAVAILABLE,
                msg,
            )
        };
        self.writes.acquire(&tenant.to_string()).map_err(|f| match f {
            Full::Key(n) => full(format!(
                "Your account has {n} uploads in progress, the most allowed at once. Please retry after some of them finish."
            )),
            Full::Total => full(
                "The gateway has as many uploads in progress as it allows. Please retry later."
                    .into(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bound_is_slow_down_naming_which() {
        let f = InFlight::new(UploadLimits {
            in_flight: 3,
            tenant_in_flight: 2,
            open_per_tenant: 1,
            parts_per_tenant: 1,
        });
        let _held = [f.enter("a").unwrap(), f.enter("a").unwrap()];
        let e = f.enter("a").err().unwrap();
        assert_eq!(e.code(), &S3ErrorCode::SlowDown);
        assert_eq!(e.status_code(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        assert!(
            e.message().unwrap().contains("Your account has 2 uploads"),
            "{e:?}"
        );
        let _b = f.enter("b").unwrap();
        let e = f.enter("b").err().unwrap();
        assert!(e.message().unwrap().contains("The gateway has"), "{e:?}");
        assert_eq!((f.of("a"), f.of("b"), f.total()), (2, 1, 3));
    }

    /// A tenant holding its lane (counting and creating at its bound) holds up no other
    /// tenant's CreateMultipartUpload; its own next one waits. (One gateway-wide lock once made
    /// every tenant wait behind one tenant's refused requests.)
    #[tokio::test]
    async fn a_tenants_upload_lane_holds_up_no_other_tenant() {
        let f = InFlight::new(UploadLimits::default());
        let held = f.upload_lane("a").await;
        let quick = std::time::Duration::from_millis(100);
        assert!(
            tokio::time::timeout(quick, f.upload_lane("b"))
                .await
                .is_ok()
        );
        assert!(
            tokio::time::timeout(quick, f.upload_lane("a"))
                .await
                .is_err()
        );
        drop(held);
        assert!(
            tokio::time::timeout(quick, f.upload_lane("a"))
                .await
                .is_ok()
        );
    }
}
