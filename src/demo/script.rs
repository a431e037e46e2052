//! The demo's script: five scenes played against the simulator, each waiting (with a time
//! limit) for the audit record that shows the expected outcome.
//!
//! Must not read the environment; it only drives the simulator and reads the timeline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;

use super::config::PROPERTY;
use super::timeline::{say, Stamp, Timeline};
use crate::sim::Sim;
use crate::store::audit::{ActionKind, Outcome};

/// The scenes, sharing the simulator and the timeline.
pub struct Script<'a> {
    pub sim: &'a Sim,
    pub stamp: Stamp,
    pub timeline: Arc<Mutex<Timeline>>,
}

impl Script<'_> {
    /// Every scene in order; the first unmet expectation ends the script.
    pub async fn play(&self, stale_thread: &str) -> anyhow::Result<()> {
        self.stay().await?;
        self.housekeeping(stale_thread).await?;
        self.wifi_and_thanks().await?;
        self.parking().await?;
        self.staff_takeover().await?;
        self.inquiry_alert().await
    }

    /// Waits until the timeline has an audit record of `action` on `thread` with `outcome`.
    async fn expect(
        &self,
        what: &'static str,
        limit: Duration,
        thread: &str,
        action: ActionKind,
        outcome: Outcome,
    ) -> anyhow::Result<()> {
        let seen = |t: &Timeline| {
            t.records.iter().any(|r| {
                r.thread_id.as_deref() == Some(thread)
                    && r.action.as_ref() == Some(&action)
                    && r.outcome == outcome
            })
        };
        let deadline = Instant::now() + limit;
        loop {
            if self.timeline.lock().map(|t| seen(&t)).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("demo expectation not met within {limit:?}: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn housekeeping(&self, stale: &str) -> anyhow::Result<()> {
        println!(
            "\n— 1. The housekeeping schedule (every 5 s here) closes a thread idle for 3 weeks"
        );
        let limit = Duration::from_secs(20);
        self.expect(
            "stale thread closed",
            limit,
            stale,
            ActionKind::CloseThread,
            Outcome::Executed,
        )
        .await
    }

    async fn wifi_and_thanks(&self) -> anyhow::Result<()> {
        println!("\n— 2. A Booking.com guest asks for the wifi, then says thanks");
        let sim = self.sim;
        let maria = sim.open_thread(PROPERTY, "BookingCom", "Maria Santos", true);
        sim.guest_message(&maria, "Hi! What's the wifi password please?");
        let limit = Duration::from_secs(15);
        self.expect(
            "wifi auto-reply",
            limit,
            &maria,
            ActionKind::Reply,
            Outcome::Executed,
        )
        .await?;
        sim.guest_message(&maria, "Thanks so much!");
        self.expect(
            "no_reply_needed on the thanks",
            limit,
            &maria,
            ActionKind::NoReplyNeeded,
            Outcome::Executed,
        )
        .await
    }

    async fn parking(&self) -> anyhow::Result<()> {
        println!("\n— 3. An Airbnb guest asks about parking");
        let john = self
            .sim
            .open_thread(PROPERTY, "Airbnb", "John Miller", true);
        self.sim
            .guest_message(&john, "Hello! Is there parking near the apartment?");
        let limit = Duration::from_secs(15);
        self.expect(
            "parking auto-reply",
            limit,
            &john,
            ActionKind::Reply,
            Outcome::Executed,
        )
        .await
    }

    async fn staff_takeover(&self) -> anyhow::Result<()> {
        println!(
            "\n— 4. A question no FAQ covers: a delayed holding reply, but staff answers first"
        );
        let sim = self.sim;
        let lena = sim.open_thread(PROPERTY, "BookingCom", "Lena Fischer", true);
        sim.guest_message(&lena, "Could you recommend a good restaurant for Saturday?");
        let armed = Duration::from_secs(15);
        self.expect(
            "delayed reply armed",
            armed,
            &lena,
            ActionKind::FollowUp,
            Outcome::Executed,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        sim.staff_message(
            &lena,
            "Hi Lena! Try Taberna da Rua das Flores, ask for Miguel.",
        );
        say(&self.stamp, "   (staff member answered Lena by hand)");
        self.expect(
            "delayed reply cancelled by the staff answer",
            Duration::from_secs(20),
            &lena,
            ActionKind::CancelFollowUp,
            Outcome::Executed,
        )
        .await
    }

    async fn inquiry_alert(&self) -> anyhow::Result<()> {
        println!("\n— 5. An Airbnb inquiry: alert staff before the response deadline");
        let now = Utc::now();
        let deadline = now + chrono::Duration::hours(2) + chrono::Duration::seconds(8);
        let day = |days| {
            (now + chrono::Duration::days(days))
                .format("%Y-%m-%d")
                .to_string()
        };
        let (checkin, checkout) = (day(10), day(13));
        let (andrew, _) = self.sim.add_inquiry(
            PROPERTY, "Andrew", deadline, &checkin, &checkout, 3, "412.50", "EUR",
        );
        say(
            &self.stamp,
            format!(
                "   (inquiry deadline {}; the 2-hour alert falls due in ~8 s)",
                deadline.format("%H:%M:%S UTC")
            ),
        );
        let armed = Duration::from_secs(15);
        self.expect(
            "inquiry follow-up armed",
            armed,
            &andrew,
            ActionKind::FollowUp,
            Outcome::Executed,
        )
        .await?;
        let alerted = Duration::from_secs(25);
        self.expect(
            "staff alert for the inquiry",
            alerted,
            &andrew,
            ActionKind::Alert,
            Outcome::Executed,
        )
        .await
    }
}
