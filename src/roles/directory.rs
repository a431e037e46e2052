//! The scheduler's view of threads over Channex: [`ChannexDirectory`], the production
//! implementation of [`ThreadDirectory`].
//!
//! Owns: fresh thread snapshots for follow-ups (thread + its newest messages, straight from
//! Channex: freshness matters more than API calls there) and the open threads of a property
//! for schedule ticks (one listing, sender times from the poller's stored snapshots, no
//! extra calls), and a booking as it is when a follow-up fires (`GET /bookings/:id`, which
//! also refreshes the booking cache). Must not: write thread snapshots (they belong to the
//! poller), nor publish.
//! It sits beside the roles rather than in one, so neither the poller nor the scheduler
//! implements the other's trait.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::channex::{ChannexClient, ChannexError, ThreadQuery};
use crate::config::Config;
use crate::events::{Booking, PropertyInfo, ThreadSnapshot};
use crate::roles::poller::detect::{fold_senders, snapshot_of};
use crate::store::bookings::BookingCache;
use crate::store::nats::Infra;
use crate::store::threads::{DirectoryError, ThreadDirectory, ThreadSnapshots, ThreadState};

/// A thread snapshot straight from Channex (thread + its newest messages): used where a
/// fresh view matters more than API calls (follow-up firing).
pub async fn fresh_snapshot(
    channex: &ChannexClient,
    thread_id: &str,
) -> Result<(ThreadSnapshot, Option<String>), ChannexError> {
    let thread = channex.get_thread(thread_id).await?;
    let page = channex.list_thread_messages_page(thread_id, 1, 100).await?;
    let mut state = ThreadState::default();
    fold_senders(&mut state, &page.items);
    Ok((snapshot_of(&thread, &state), thread.property_id.clone()))
}

/// The scheduler's view of threads, backed by Channex (fresh snapshots for follow-ups) and
/// the poller's snapshots (sender timestamps for schedule ticks, without extra calls).
pub struct ChannexDirectory {
    channex: ChannexClient,
    snapshots: ThreadSnapshots,
    bookings: BookingCache,
    config: Arc<Config>,
}

impl ChannexDirectory {
    pub fn new(channex: ChannexClient, infra: &Infra, config: Arc<Config>) -> Self {
        ChannexDirectory {
            channex,
            snapshots: ThreadSnapshots::new(infra.threads.clone()),
            bookings: BookingCache::new(infra.threads.clone()),
            config,
        }
    }

    /// What the poller knows of a thread; nothing (not an error) when it cannot be read:
    /// the tick event then lacks only the sender times.
    async fn known_state(&self, thread_id: &str) -> ThreadState {
        match self.snapshots.get(thread_id).await {
            Ok(Some(state)) => state,
            _ => ThreadState::default(),
        }
    }
}

impl ThreadDirectory for ChannexDirectory {
    fn snapshot(
        &self,
        _property_id: &str,
        thread_id: &str,
    ) -> BoxFuture<'_, Result<Option<ThreadSnapshot>, DirectoryError>> {
        let thread_id = thread_id.to_string();
        Box::pin(async move {
            match fresh_snapshot(&self.channex, &thread_id).await {
                Ok((snapshot, _)) => Ok(Some(snapshot)),
                Err(e) if e.status() == Some(404) => Ok(None),
                Err(e) => Err(DirectoryError::new(e)),
            }
        })
    }

    fn open_threads(
        &self,
        property_id: &str,
    ) -> BoxFuture<'_, Result<Vec<ThreadSnapshot>, DirectoryError>> {
        let property_id = property_id.to_string();
        Box::pin(async move {
            let listing = self
                .channex
                .list_threads(&ThreadQuery::for_property(property_id.clone()))
                .await
                .map_err(DirectoryError::new)?;
            let mut out = Vec::new();
            for t in listing.items.iter().filter(|t| {
                !t.is_closed && t.property_id.as_deref().is_none_or(|p| p == property_id)
            }) {
                let state = self.known_state(&t.id).await;
                out.push(snapshot_of(t, &state));
            }
            Ok(out)
        })
    }

    fn property(&self, property_id: &str) -> PropertyInfo {
        self.config.property_info(property_id)
    }

    fn booking(&self, booking_id: &str) -> BoxFuture<'_, Result<Option<Booking>, DirectoryError>> {
        let booking_id = booking_id.to_string();
        Box::pin(async move {
            let record = match self.channex.get_booking(&booking_id).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(404) => return Ok(None),
                Err(e) => return Err(DirectoryError::new(e)),
            };
            let booking = Booking::from_channex(&record);
            // The refresh keeps what the poller announced, so it still sees the change,
            // and never overwrites a newer copy (see `BookingCache::refresh`).
            if let Err(e) = self.bookings.refresh(&record).await {
                tracing::debug!(booking = %booking_id, error = %e, "booking cache not refreshed");
            }
            Ok(Some(booking))
        })
    }

    fn properties(&self) -> Vec<String> {
        if self.config.channex.property_ids.is_empty() {
            self.config.properties.keys().cloned().collect()
        } else {
            self.config.channex.property_ids.clone()
        }
    }
}
