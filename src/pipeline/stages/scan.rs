//! The virus scan: clamd's stream is opened before the body is read (an unreachable scanner
//! fails the upload at once, or follows the bucket's fallback), fed every chunk, and its verdict
//! decides whether the write may commit.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::Backends;
use crate::meta::ScanInfo;
use crate::pipeline::policy::Fallback;
use crate::pipeline::stage::{Found, Stage, Write, Written};
use crate::pipeline::{PipelineError, fallback, settle};
use crate::scanner::{Feed, FeedSender, Scanner};

pub struct Scan {
    backend: Arc<Backends>,
    scanner: Arc<Scanner>,
    feed: Option<(Feed, FeedSender)>,
    /// Decided without clamd (too large to scan, or clamd unreachable and the bucket stores such
    /// objects unscanned).
    unscanned: Option<ScanInfo>,
    on_unavailable: Fallback,
    /// The scanner failed during the upload and the bucket stores such objects unscanned: its
    /// verdict must not be used.
    cut: Option<PipelineError>,
    /// Bytes fed so far, and the most clamd takes: a body of unknown length that passes it is
    /// too large to scan from there on (`on_too_large_to_scan`).
    fed: u64,
    max: u64,
    on_too_large: Fallback,
}

impl Scan {
    pub fn new(backend: Arc<Backends>, scanner: Arc<Scanner>) -> Self {
        Self {
            backend,
            scanner,
            feed: None,
            unscanned: None,
            on_unavailable: Fallback::Reject,
            cut: None,
            fed: 0,
            max: u64::MAX,
            on_too_large: Fallback::Reject,
        }
    }
}

#[async_trait]
impl Stage for Scan {
    async fn open(&mut self, w: &Write<'_>) -> Result<(), PipelineError> {
        self.on_unavailable = w.policy.on_scanner_unavailable;
        self.on_too_large = w.policy.on_too_large_to_scan;
        self.max = self.scanner.config().max_stream;
        if w.len.is_some_and(|n| n > self.max) {
            let e = PipelineError::TooLargeToScan(self.max);
            self.unscanned = Some(fallback(self.on_too_large, e)?);
            return Ok(());
        }
        match self.scanner.start().await {
            Ok(f) => self.feed = Some(f),
            Err(e) => self.unscanned = Some(fallback(self.on_unavailable, e.into())?),
        }
        Ok(())
    }

    fn defers_md5(&self) -> bool {
        // clamd only starts on the bytes once the stream has ended and then keeps a core busy
        // for most of the upload's time: an MD5 the backend would compute on our CPU is taken
        // off the transfer and read back during that wait.
        self.feed.is_some()
    }

    async fn chunk(&mut self, bytes: &Bytes) -> Result<(), PipelineError> {
        if self.cut.is_some() {
            return Ok(());
        }
        self.fed += bytes.len() as u64;
        if self.feed.is_some() && self.fed > self.max {
            // A metered body just outgrew clamd: its stream is closed unjudged.
            self.feed = None;
            let e = PipelineError::TooLargeToScan(self.max);
            self.unscanned = Some(fallback(self.on_too_large, e)?);
            return Ok(());
        }
        if let Some((_, tx)) = &self.feed
            && !tx.send(bytes.clone()).await
        {
            let e = PipelineError::ScannerUnavailable(
                "the virus scanner stopped during the upload".into(),
            );
            if self.on_unavailable == Fallback::Reject {
                return Err(e);
            }
            self.cut = Some(e);
        }
        Ok(())
    }

    async fn finish(&mut self, w: &Write<'_>, blob: &Written<'_>) -> Result<Found, PipelineError> {
        let scan = match (self.cut.take(), self.feed.take(), self.unscanned.take()) {
            (Some(e), _, _) => fallback(Fallback::StoreUnscanned, e)?,
            (None, Some((feed, sender)), _) => {
                drop(sender);
                let verdict = Ok(feed.finish().await);
                let segments = std::slice::from_ref(blob.segment);
                settle(
                    &self.backend,
                    &self.scanner,
                    verdict,
                    w.policy,
                    segments,
                    w.target,
                )
                .await?
            }
            (None, None, Some(info)) => info,
            (None, None, None) => unreachable!("open decided without a scan"),
        };
        Ok(Found {
            scan: Some(scan),
            ..Default::default()
        })
    }
}
