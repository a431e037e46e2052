//! The demo's stay scene: a Booking.com booking without a thread, its check-in
//! instructions armed for the day before arrival, the stay moved one day earlier, and the
//! instructions going out at the new time (once) through the booking's messages endpoint,
//! in the booking's language (German) and followed by `attachments/checkin-guide.pdf`.
//!
//! The demo property's `checkin_message_time` is set (by [`super::config`]) to a local
//! time a few seconds after the demo starts, so "the day before arrival" arrives within the
//! demo when the arrival is tomorrow. It runs first for that reason. Must not read the
//! environment; it drives the simulator and reads the timeline.

use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;

use super::config::PROPERTY;
use super::script::Script;
use super::timeline::say;
use crate::sim::{BookingChangeRequest, NewBooking};
use crate::store::audit::{ActionKind, AuditRecord, Outcome, Reason};

/// How long after the demo's configuration the check-in message falls due.
pub const CHECKIN_MESSAGE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(14);

impl Script<'_> {
    /// Waits until the timeline has `n` audit records matching `pred`.
    async fn expect_records(
        &self,
        what: &'static str,
        limit: Duration,
        n: usize,
        pred: impl Fn(&AuditRecord) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let count = self
                .timeline
                .lock()
                .map(|t| t.records.iter().filter(|r| pred(r)).count())
                .unwrap_or(0);
            if count >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("demo expectation not met within {limit:?}: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn stay(&self) -> anyhow::Result<()> {
        println!(
            "— 0. A stay follows its booking: check-in instructions the day before arrival, \
             in the guest's language (German), with the guide attached"
        );
        let today = Utc::now()
            .with_timezone(&chrono_tz::Europe::Lisbon)
            .date_naive();
        let day = |n: u64| {
            (today + chrono::Days::new(n))
                .format("%Y-%m-%d")
                .to_string()
        };
        let booking = NewBooking {
            property_id: PROPERTY.into(),
            ota_name: "BookingCom".into(),
            arrival_date: day(2),
            departure_date: day(4),
            guest_name: "Anna Schmidt".into(),
            language: Some("de".into()),
            adults: 2,
            children: 0,
            with_thread: false,
        };
        let Some((id, _)) = self.sim.create_booking(&booking) else {
            bail!("the simulator refused the demo booking");
        };
        say(
            &self.stamp,
            format!(
                "   (Anna booked {} → {}; no conversation yet)",
                day(2),
                day(4)
            ),
        );
        let armed = |r: &AuditRecord| {
            r.action == Some(ActionKind::FollowUp)
                && r.outcome == Outcome::Executed
                && matches!(&r.reason, Some(Reason::Armed { name, .. }) if name == "checkin_instructions")
                && r.event_id.as_deref().is_some_and(|e| e.contains(&id))
        };
        self.expect_records(
            "check-in instructions armed",
            Duration::from_secs(15),
            1,
            armed,
        )
        .await?;
        let change = BookingChangeRequest {
            arrival_date: Some(day(1)),
            departure_date: Some(day(3)),
            status: None,
        };
        if let Err(e) = self.sim.modify_booking(&id, &change) {
            bail!("the simulator refused the date change: {e}");
        }
        say(
            &self.stamp,
            format!(
                "   (Anna moved the stay one day earlier: {} → {})",
                day(1),
                day(3)
            ),
        );
        self.expect_records(
            "check-in instructions re-armed",
            Duration::from_secs(15),
            2,
            armed,
        )
        .await?;
        self.expect_instructions_sent().await
    }

    /// The check-in instructions went out (at the new time), then the guide attached.
    async fn expect_instructions_sent(&self) -> anyhow::Result<()> {
        let sent = |r: &AuditRecord| {
            r.action == Some(ActionKind::Reply)
                && r.outcome == Outcome::Executed
                && r.template.as_deref() == Some("stay_checkin_instructions")
        };
        self.expect_records(
            "check-in instructions sent at the new time",
            Duration::from_secs(40),
            1,
            sent,
        )
        .await?;
        let attached = |r: &AuditRecord| {
            r.action == Some(ActionKind::Attachment) && r.outcome == Outcome::Executed
        };
        self.expect_records(
            "the check-in guide attached",
            Duration::from_secs(15),
            1,
            attached,
        )
        .await
    }
}
