//! A kiosk page's session: whose swipe the page may use, and for what.
//!
//! The daemon remembers successful swipes for five minutes for every
//! client of its socket (the display, `cardlinkctl`). A kiosk screen is
//! used by one patient after another, so the display narrows that for its
//! pages: a swipe opens a session for that person on the pages connected
//! at that moment only, and the session ends
//! * after `idle` without a swipe or a request from the page,
//! * when the card is taken out, unless a bind is waiting for the member's
//!   card (the holder takes theirs out to swipe the member's),
//! * when another card is swiped (a new session, for that card),
//! * when the page says the person is done (`end`), after a bind, and when
//!   the role changes.
//!
//! In 长辈模式 (elder mode, the page's `keep` with `elder`, or the
//! display's default `--elder`) the session lasts at least [`ELDER_IDLE`]
//! without a touch: the 2021 适老化 rules of the Ministry of Industry and
//! Information Technology (《移动互联网应用（APP）适老化通用设计规范》 and
//! 《互联网网站适老化通用设计规范》, April 2021) ask for no time limits
//! where they are not essential. The mode goes back
//! to the display's default when the session ends.
//!
//! Payment records are shown only for the session's person; a bind only
//! for the holder and member of the bind flow that this session started
//! (`bind_start`) and in which the member's card was swiped.

use std::time::Duration;

use tokio::time::Instant;

/// Where the bind flow of a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// No bind under way.
    None,
    /// The holder started a bind; the next usable card is the member's.
    AwaitMember,
    /// The member's card was swiped (this swipe id); the relation is
    /// being chosen.
    Choosing(u64),
}

/// The shortest idle time of a session in 长辈模式.
pub const ELDER_IDLE: Duration = Duration::from_secs(60);

/// One page's session at a kiosk.
#[derive(Debug)]
pub struct Session {
    idle: Duration,
    elder_default: bool,
    elder: bool,
    person: Option<u64>,
    flow: Flow,
    last: Instant,
}

/// Why a page's request does not belong to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No session (or it ended).
    NoSession,
    /// The swipe is not this session's.
    OtherSwipe,
    /// A bind that this session's flow did not lead to.
    NotThisBind,
}

impl Refused {
    /// The sentence for the page.
    pub fn message(self) -> &'static str {
        match self {
            Refused::NoSession => "no card is being served at this screen; swipe the card",
            Refused::OtherSwipe => "that swipe is not the card being served at this screen",
            Refused::NotThisBind => {
                "a bind needs the holder's and then the member's card swiped in one bind flow"
            }
        }
    }
}

impl Session {
    /// An empty session that ends after `idle` (at least [`ELDER_IDLE`]
    /// in 长辈模式, which is on from the start when `elder`).
    pub fn new(idle: Duration, elder: bool) -> Session {
        Session {
            idle,
            elder_default: elder,
            elder,
            person: None,
            flow: Flow::None,
            last: Instant::now(),
        }
    }

    fn reset(&mut self) {
        self.person = None;
        self.flow = Flow::None;
        self.elder = self.elder_default;
    }

    /// How long the session lasts without a touch, now.
    pub fn span(&self) -> Duration {
        if self.elder {
            self.idle.max(ELDER_IDLE)
        } else {
            self.idle
        }
    }

    /// Ends the session if it has been idle too long.
    fn expire(&mut self, now: Instant) {
        if now.duration_since(self.last) >= self.span() {
            self.reset();
        }
    }

    /// When the session ends unless something happens first (`None`
    /// while there is none).
    pub fn deadline(&self) -> Option<Instant> {
        (self.person.is_some() || self.flow != Flow::None).then_some(self.last + self.span())
    }

    /// The person is still there (a touch, 继续), in 长辈模式 or not;
    /// whether a session is live. The mode holds until the session ends,
    /// also when it is set before the first swipe.
    pub fn keep(&mut self, elder: bool) -> bool {
        let now = Instant::now();
        self.expire(now);
        self.elder = elder;
        self.last = now;
        self.person.is_some() || self.flow != Flow::None
    }

    /// Ends the session if its deadline has passed; whether it did.
    pub fn expire_now(&mut self) -> bool {
        let live = self.deadline().is_some();
        self.expire(Instant::now());
        live && self.deadline().is_none()
    }

    /// A card was swiped (`usable`: it resolved to a card the person may
    /// use, so its swipe id can be used for requests).
    pub fn card(&mut self, swipe: u64, usable: bool) {
        let now = Instant::now();
        self.expire(now);
        match (self.person, self.flow) {
            (Some(_), Flow::AwaitMember) if usable => self.flow = Flow::Choosing(swipe),
            // An unusable card while waiting for the member: still waiting.
            (Some(_), Flow::AwaitMember) => {}
            _ => {
                self.person = usable.then_some(swipe);
                self.flow = Flow::None;
            }
        }
        self.last = now;
    }

    /// The card was taken out of the reader.
    pub fn removed(&mut self) {
        if self.flow == Flow::None {
            self.reset();
        }
    }

    /// The person is done (or the role changed).
    pub fn end(&mut self) {
        self.reset();
    }

    /// Keeps a live session alive (the page did something); `Err` if it
    /// has ended.
    fn touch(&mut self) -> Result<u64, Refused> {
        let now = Instant::now();
        self.expire(now);
        let person = self.person.ok_or(Refused::NoSession)?;
        self.last = now;
        Ok(person)
    }

    /// The person starts a bind: the next usable card is the member's.
    pub fn bind_start(&mut self) -> Result<(), Refused> {
        self.touch()?;
        self.flow = Flow::AwaitMember;
        Ok(())
    }

    /// Whether payment records of `swipe` may be shown.
    pub fn records(&mut self, swipe: u64) -> Result<(), Refused> {
        if self.touch()? != swipe {
            return Err(Refused::OtherSwipe);
        }
        Ok(())
    }

    /// Whether a bind of `holder` and `member` is this session's bind
    /// flow. The flow is over either way: a bind is tried once per flow.
    pub fn bind(&mut self, holder: u64, member: u64) -> Result<(), Refused> {
        let person = self.touch()?;
        let flow = std::mem::replace(&mut self.flow, Flow::None);
        if person != holder || flow != Flow::Choosing(member) {
            return Err(Refused::NotThisBind);
        }
        self.reset();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_with_idle_removal_and_the_next_card() {
        let mut s = Session::new(IDLE, false);
        assert_eq!(s.records(1), Err(Refused::NoSession));
        s.card(1, true);
        assert_eq!(s.records(1), Ok(()));
        assert_eq!(s.records(2), Err(Refused::OtherSwipe));
        tokio::time::advance(IDLE + Duration::from_secs(1)).await;
        assert_eq!(s.records(1), Err(Refused::NoSession));
        s.card(1, true);
        s.removed();
        assert_eq!(s.records(1), Err(Refused::NoSession));
        s.card(1, true);
        s.card(2, true);
        assert_eq!(s.records(1), Err(Refused::OtherSwipe));
        s.card(3, false);
        assert_eq!(s.records(2), Err(Refused::NoSession));
    }

    #[tokio::test(start_paused = true)]
    async fn elder_mode_lasts_a_minute_at_least_and_ends_with_the_session() {
        let short = Duration::from_secs(10);
        let mut s = Session::new(short, false);
        s.card(1, true);
        assert!(s.keep(true));
        assert_eq!(s.span(), ELDER_IDLE);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(s.records(1), Ok(()), "alive after 59 s in 长辈模式");
        tokio::time::advance(ELDER_IDLE + Duration::from_secs(1)).await;
        assert_eq!(s.records(1), Err(Refused::NoSession));
        // The mode ended with the session: back to the short idle time.
        s.card(2, true);
        assert_eq!(s.span(), short);
        tokio::time::advance(short + Duration::from_secs(1)).await;
        assert_eq!(s.records(2), Err(Refused::NoSession));
        // Set on the idle screen, it holds for the next swipe; a display
        // started with --elder is in it from the start.
        assert!(!s.keep(true));
        s.card(3, true);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(s.records(3), Ok(()));
        let e = Session::new(short, true);
        assert_eq!(e.span(), ELDER_IDLE);
        // A longer configured idle time stays as it is.
        assert_eq!(Session::new(IDLE * 4, true).span(), IDLE * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bind_needs_both_swipes_in_one_flow() {
        let mut s = Session::new(IDLE, false);
        s.card(1, true);
        s.card(2, true);
        // Two swipes without a bind flow: the second is a new session.
        assert_eq!(s.bind(1, 2), Err(Refused::NotThisBind));
        s.card(1, true);
        assert_eq!(s.bind_start(), Ok(()));
        s.removed();
        s.card(2, false);
        s.card(3, true);
        assert_eq!(s.bind(1, 2), Err(Refused::NotThisBind));
        s.card(1, true);
        s.bind_start().unwrap();
        s.card(3, true);
        assert_eq!(s.bind(1, 3), Ok(()));
        assert_eq!(s.bind(1, 3), Err(Refused::NoSession));
    }
}
