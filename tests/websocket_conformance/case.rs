//! A conformance case, how it runs over a fresh connection, and how its transcript is judged.
//!
//! Verdicts follow Autobahn's vocabulary and the RFC's keywords: **OK** when the server did
//! what the RFC asks; **NON-STRICT** when it broke only a SHOULD (for example it failed a
//! connection by dropping TCP instead of sending Close 1002 first, §7.1.7) or did something
//! the RFC allows but discourages; **FAILED** when it broke a MUST (no Close frame in answer
//! to ours, §5.5.1; data echoed after a violation it had to fail on; a wrong close code; TCP
//! left open after the closing handshake) or a documented limit of the gateway.

use std::fmt;
use std::time::Duration;

use gatehouse_testkit::rawws::{Event, Frame, Outcome, RawWs, Transcript};

/// The failure bound for each wait of an ordinary case (a frame, a Close, the TCP close).
pub const BOUND: Duration = Duration::from_secs(5);

/// The bound for cases that move megabytes through a debug build on a shared machine.
pub const LARGE_BOUND: Duration = Duration::from_secs(30);

/// One thing the client does.
pub enum Step {
    /// Frames in one write.
    Send(Vec<Frame>),
    /// Frames written `n` bytes per write.
    Chopped(Vec<Frame>, usize),
    /// Wait until the server sent this pong: a positive ordering proof that it answered a
    /// control frame before the client goes on (instead of a sleep).
    AwaitPong(Vec<u8>),
}

/// What the server must do.
#[derive(Clone)]
pub enum Expect {
    /// Send exactly these events (data messages in this order; pongs in order, possibly only
    /// the last of several, §5.5.3), then answer the client's Close 1000 with a Close and
    /// close TCP.
    Echo(Vec<Event>),
    /// Fail the connection (§7.1.7): a Close frame with one of `codes`, then close TCP.
    Fail {
        /// Events the server owes for frames before the violation (NON-STRICT if it failed
        /// before sending them; anything else is FAILED).
        before: Vec<Event>,
        /// Close codes that are right.
        codes: Vec<u16>,
        /// Close codes that are acceptable but not the best answer (NON-STRICT).
        lenient: Vec<u16>,
        /// The verdict for dropping TCP without a Close frame (§7.1.7 says SHOULD send one).
        drop: Verdict,
    },
    /// The client sent a Close: the server must answer with a Close carrying one of `codes`
    /// (`None`: empty) and close TCP (§5.5.1). `before` lists messages it may still send
    /// first (§5.5.1 lets it finish the current message); any other data message is FAILED.
    CloseReply {
        /// Events the server may send before its Close.
        before: Vec<Event>,
        /// Answers that are right.
        codes: Vec<Option<u16>>,
    },
    /// The RFC does not say whether a receiver accepts this (a sender-side MUST the client
    /// broke): echoing it or failing with one of `codes` are both OK.
    EchoOrFail {
        /// The echo.
        events: Vec<Event>,
        /// Codes a failure may carry.
        codes: Vec<u16>,
    },
}

impl Expect {
    /// Echo these events, then close cleanly.
    pub fn echo(events: Vec<Event>) -> Expect {
        Expect::Echo(events)
    }

    /// Fail with `code`; dropping TCP without a Close is NON-STRICT.
    pub fn fail(code: u16) -> Expect {
        Expect::Fail {
            before: Vec::new(),
            codes: vec![code],
            lenient: Vec::new(),
            drop: Verdict::NonStrict(
                "dropped TCP without a Close frame: §7.1.7 says a Close with a status code SHOULD come first".into(),
            ),
        }
    }

    /// Answer the client's Close with a Close carrying one of `codes`.
    pub fn close_reply(codes: &[Option<u16>]) -> Expect {
        Expect::CloseReply {
            before: Vec::new(),
            codes: codes.to_vec(),
        }
    }

    /// Sets the events a failure or a close may be preceded by.
    pub fn after(mut self, events: Vec<Event>) -> Expect {
        match &mut self {
            Expect::Fail { before, .. } | Expect::CloseReply { before, .. } => *before = events,
            _ => panic!("only failures and close replies have events before them"),
        }
        self
    }

    /// Adds a close code that is right too.
    pub fn or(mut self, code: u16) -> Expect {
        match &mut self {
            Expect::Fail { codes, .. } | Expect::EchoOrFail { codes, .. } => codes.push(code),
            _ => panic!("only failures have close codes"),
        }
        self
    }

    /// Adds close codes that earn NON-STRICT instead of OK.
    pub fn lenient(mut self, codes: &[u16]) -> Expect {
        match &mut self {
            Expect::Fail { lenient, .. } => lenient.extend_from_slice(codes),
            _ => panic!("only failures have lenient codes"),
        }
        self
    }

    /// Sets the verdict for a TCP drop without a Close frame.
    pub fn on_drop(mut self, verdict: Verdict) -> Expect {
        match &mut self {
            Expect::Fail { drop, .. } => *drop = verdict,
            _ => panic!("only failures can be dropped"),
        }
        self
    }

    fn describe(&self) -> String {
        match self {
            Expect::Echo(events) => format!("{} then a clean close", short(events)),
            Expect::Fail { before, codes, .. } => {
                let prefix = if before.is_empty() {
                    String::new()
                } else {
                    format!("{} then ", short(before))
                };
                format!("{prefix}fail: Close {}", list(codes))
            }
            Expect::CloseReply { before, codes } => {
                let prefix = if before.is_empty() {
                    String::new()
                } else {
                    format!("[maybe {}] ", short(before))
                };
                let codes: Vec<String> = codes
                    .iter()
                    .map(|c| c.map_or("empty".to_owned(), |c| c.to_string()))
                    .collect();
                format!("{prefix}Close {} answered, TCP closed", codes.join("/"))
            }
            Expect::EchoOrFail { events, codes } => format!("{} or fail: Close {}", short(events), list(codes)),
        }
    }
}

fn list(codes: &[u16]) -> String {
    codes.iter().map(u16::to_string).collect::<Vec<_>>().join("/")
}

fn short(events: &[Event]) -> String {
    if events.len() <= 4 {
        format!("{events:?}")
    } else {
        format!(
            "{} events ({:?} … {:?})",
            events.len(),
            events[0],
            events[events.len() - 1]
        )
    }
}

/// One case: what the client sends and what the server must do.
pub struct Case {
    /// The case number, after Autobahn's where one corresponds.
    pub id: String,
    /// What it sends.
    pub title: String,
    /// The client's actions, in order, on a fresh connection.
    pub steps: Vec<Step>,
    /// The server's duty.
    pub expect: Expect,
    /// The failure bound of each wait.
    pub bound: Duration,
}

impl Case {
    /// A case that sends `frames` in one write.
    pub fn new(id: impl Into<String>, title: impl Into<String>, frames: Vec<Frame>, expect: Expect) -> Case {
        Case {
            id: id.into(),
            title: title.into(),
            steps: vec![Step::Send(frames)],
            expect,
            bound: BOUND,
        }
    }

    /// A case with explicit steps.
    pub fn steps(id: impl Into<String>, title: impl Into<String>, steps: Vec<Step>, expect: Expect) -> Case {
        Case {
            id: id.into(),
            title: title.into(),
            steps,
            expect,
            bound: BOUND,
        }
    }

    /// Writes every step's frames `n` bytes per write.
    pub fn chopped(mut self, n: usize) -> Case {
        self.steps = self
            .steps
            .into_iter()
            .map(|step| match step {
                Step::Send(frames) | Step::Chopped(frames, _) => Step::Chopped(frames, n),
                other => other,
            })
            .collect();
        self
    }

    /// Writes each frame separately ("frame-wise").
    pub fn frame_wise(mut self) -> Case {
        self.steps = self
            .steps
            .into_iter()
            .flat_map(|step| match step {
                Step::Send(frames) => frames.into_iter().map(|f| Step::Send(vec![f])).collect(),
                other => vec![other],
            })
            .collect();
        self
    }

    /// Uses the bound for large cases.
    pub fn large(mut self) -> Case {
        self.bound = LARGE_BOUND;
        self
    }
}

/// A verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// What the RFC asks.
    Ok,
    /// A SHOULD broken, or something allowed but discouraged.
    NonStrict(String),
    /// A MUST broken (or the gateway's documented limit behaviour).
    Failed(String),
}

impl Verdict {
    fn rank(&self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::NonStrict(_) => 1,
            Verdict::Failed(_) => 2,
        }
    }

    /// The worse of two verdicts.
    fn worst(self, other: Verdict) -> Verdict {
        if other.rank() > self.rank() { other } else { self }
    }

    /// The reason, if any.
    pub fn why(&self) -> &str {
        match self {
            Verdict::Ok => "",
            Verdict::NonStrict(why) | Verdict::Failed(why) => why,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "OK",
            Verdict::NonStrict(_) => "NON-STRICT",
            Verdict::Failed(_) => "FAILED",
        })
    }
}

/// The result of one case.
pub struct CaseResult {
    /// The case number.
    pub id: String,
    /// What it sent.
    pub title: String,
    /// What the server had to do.
    pub expected: String,
    /// What it did.
    pub observed: String,
    /// The verdict.
    pub verdict: Verdict,
    /// How long the case took, connection to TCP close.
    pub elapsed: Duration,
}

/// Runs `case` over a fresh connection to `url`.
pub async fn run(url: &str, case: &Case) -> CaseResult {
    let started = std::time::Instant::now();
    let result = |observed: String, verdict: Verdict| CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        expected: case.expect.describe(),
        observed,
        verdict,
        elapsed: started.elapsed(),
    };
    let mut ws = match RawWs::connect_url(url).await {
        Ok(ws) => ws,
        Err(error) => {
            return result(
                "no connection".into(),
                Verdict::Failed(format!("handshake failed: {error:#}")),
            );
        }
    };
    for step in &case.steps {
        match step {
            Step::Send(frames) => {
                ws.send(frames).await;
            }
            Step::Chopped(frames, n) => {
                ws.send_chopped(frames, *n).await;
            }
            Step::AwaitPong(payload) => {
                let pong = Event::Pong(payload.clone());
                if !ws.read_until(case.bound, |events| events.contains(&pong)).await {
                    let transcript = ws.finish(case.bound).await;
                    let why = format!(
                        "never answered ping {:?} (awaited before going on)",
                        String::from_utf8_lossy(payload)
                    );
                    return result(transcript.summary(), Verdict::Failed(why));
                }
            }
        }
    }
    if let Expect::Echo(expected) | Expect::EchoOrFail { events: expected, .. } = &case.expect {
        ws.read_until(case.bound, |events| all_arrived(expected, events)).await;
        if !ws.ended() {
            ws.close(1000, "").await;
        }
    }
    let transcript = ws.finish(case.bound).await;
    result(transcript.summary(), judge(&case.expect, &transcript, case.bound))
}

/// Whether every expected message and the last expected pong arrived.
fn all_arrived(expected: &[Event], events: &[Event]) -> bool {
    let (want_messages, want_pongs) = split(expected);
    let (messages, pongs) = split(events);
    messages.len() >= want_messages.len() && want_pongs.last().is_none_or(|last| pongs.contains(last))
}

fn split(events: &[Event]) -> (Vec<&Event>, Vec<&Event>) {
    events.iter().partition(|e| !matches!(e, Event::Pong(_)))
}

/// Whether `observed` is a subsequence of `expected` (pongs may be coalesced, §5.5.3).
fn subsequence(observed: &[&Event], expected: &[&Event]) -> bool {
    let mut rest = expected.iter();
    observed.iter().all(|o| rest.any(|e| e == o))
}

/// Checks that exactly the expected events came.
fn exact(expected: &[Event], observed: &[Event]) -> Result<(), String> {
    let (want_messages, want_pongs) = split(expected);
    let (messages, pongs) = split(observed);
    if messages != want_messages {
        return Err(format!(
            "messages differ: expected {}, got {}",
            short_refs(&want_messages),
            short_refs(&messages)
        ));
    }
    let last_ok = want_pongs.last().is_none_or(|last| pongs.last() == Some(last));
    if !subsequence(&pongs, &want_pongs) || !last_ok {
        return Err(format!(
            "pongs differ: expected {}, got {}",
            short_refs(&want_pongs),
            short_refs(&pongs)
        ));
    }
    Ok(())
}

/// Checks that the observed events are a prefix of the expected ones; returns whether all came.
fn prefix(expected: &[Event], observed: &[Event]) -> Result<bool, String> {
    let (want_messages, want_pongs) = split(expected);
    let (messages, pongs) = split(observed);
    if messages.len() > want_messages.len() || messages[..] != want_messages[..messages.len()] {
        return Err(format!(
            "sent messages it must not: expected at most {}, got {}",
            short_refs(&want_messages),
            short_refs(&messages)
        ));
    }
    if !subsequence(&pongs, &want_pongs) {
        return Err(format!(
            "sent pongs it must not: expected at most {}, got {}",
            short_refs(&want_pongs),
            short_refs(&pongs)
        ));
    }
    let all = messages.len() == want_messages.len() && want_pongs.last().is_none_or(|last| pongs.last() == Some(last));
    Ok(all)
}

fn short_refs(events: &[&Event]) -> String {
    short(&events.iter().map(|e| (*e).clone()).collect::<Vec<_>>())
}

/// The verdict on a transcript.
pub fn judge(expect: &Expect, transcript: &Transcript, bound: Duration) -> Verdict {
    if !transcript.violations.is_empty() {
        return Verdict::Failed(format!("protocol violations: {}", transcript.violations.join("; ")));
    }
    let noted = if transcript.notes.is_empty() {
        Verdict::Ok
    } else {
        Verdict::NonStrict(transcript.notes.join("; "))
    };
    let outcome = transcript.outcome();
    let verdict = match expect {
        Expect::Echo(expected) => judge_echo(expected, transcript, &outcome, bound),
        Expect::Fail {
            before,
            codes,
            lenient,
            drop,
        } => judge_fail(before, codes, lenient, drop, transcript, &outcome, bound),
        Expect::CloseReply { before, codes } => judge_close_reply(before, codes, transcript, &outcome, bound),
        Expect::EchoOrFail { events, codes } => match judge_echo(events, transcript, &outcome, bound) {
            // It echoed, so it is judged as an echo (its closing included).
            echo if exact(events, &transcript.events).is_ok() => echo,
            echo => {
                let drop_ok = Verdict::Ok;
                match judge_fail(&[], codes, &[], &drop_ok, transcript, &outcome, bound) {
                    Verdict::Failed(fail) => {
                        Verdict::Failed(format!("neither an echo ({}) nor a failure ({fail})", echo.why()))
                    }
                    _ => Verdict::Ok,
                }
            }
        },
    };
    verdict.worst(noted)
}

fn judge_echo(expected: &[Event], transcript: &Transcript, outcome: &Outcome, bound: Duration) -> Verdict {
    if let Err(diff) = exact(expected, &transcript.events) {
        return Verdict::Failed(diff);
    }
    match outcome {
        Outcome::Clean { code, .. } if !transcript.client_closed_first => Verdict::Failed(format!(
            "closed the connection itself ({code:?}) instead of waiting for the client's Close"
        )),
        Outcome::Clean {
            code: None | Some(1000),
            ..
        } => Verdict::Ok,
        Outcome::Clean { code: Some(code), .. } => Verdict::NonStrict(format!("answered Close 1000 with {code}")),
        other => closing_failure(other, bound),
    }
}

fn judge_fail(
    before: &[Event],
    codes: &[u16],
    lenient: &[u16],
    drop: &Verdict,
    transcript: &Transcript,
    outcome: &Outcome,
    bound: Duration,
) -> Verdict {
    let complete = match prefix(before, &transcript.events) {
        Ok(complete) => complete,
        Err(extra) => return Verdict::Failed(format!("kept going after the violation: {extra}")),
    };
    let ending = match outcome {
        Outcome::Clean { code: Some(code), .. } if codes.contains(code) => Verdict::Ok,
        Outcome::Clean { code: Some(code), .. } if lenient.contains(code) => {
            Verdict::NonStrict(format!("failed with {code}; {} says why more precisely", list(codes)))
        }
        Outcome::Clean { code: None, .. } => {
            Verdict::NonStrict("failed with an empty Close: a status code SHOULD say why (§7.1.7)".into())
        }
        Outcome::Clean { code: Some(code), .. } => {
            Verdict::Failed(format!("wrong close code {code}, expected {}", list(codes)))
        }
        Outcome::Unclean { .. } => drop.clone(),
        Outcome::CloseWithoutTcpClose { .. } => Verdict::Failed(format!(
            "sent Close but left TCP open for {bound:?} (§5.5.1/§7.1.1: MUST close the TCP connection)"
        )),
        Outcome::Timeout => Verdict::Failed(format!(
            "did not fail the connection within {bound:?}: no Close frame, TCP still open (a MUST)"
        )),
    };
    if complete {
        ending
    } else {
        ending.worst(Verdict::NonStrict(format!(
            "failed before answering what came before the violation ({})",
            short(before)
        )))
    }
}

fn judge_close_reply(
    before: &[Event],
    codes: &[Option<u16>],
    transcript: &Transcript,
    outcome: &Outcome,
    bound: Duration,
) -> Verdict {
    let (messages, pongs) = split(&transcript.events);
    let (want_messages, _) = split(before);
    if messages.len() > want_messages.len() || messages[..] != want_messages[..messages.len()] {
        return Verdict::Failed(format!(
            "sent data it must not (the client's data after its Close is to be ignored): {}",
            short_refs(&messages)
        ));
    }
    let mut verdict = if pongs.is_empty() {
        Verdict::Ok
    } else {
        Verdict::NonStrict(format!(
            "answered pings sent after the client's Close: {}",
            short_refs(&pongs)
        ))
    };
    if messages.len() < want_messages.len() {
        verdict = verdict.worst(Verdict::NonStrict(format!(
            "closed without sending {} first (allowed, §5.5.1 MAY)",
            short_refs(&want_messages)
        )));
    }
    let ending = match outcome {
        Outcome::Clean { code, .. } if codes.contains(code) => Verdict::Ok,
        Outcome::Clean { code, .. } => Verdict::Failed(format!(
            "answered with {}, expected {}",
            code.map_or("an empty Close".to_owned(), |c| format!("Close {c}")),
            codes
                .iter()
                .map(|c| c.map_or("empty".to_owned(), |c| c.to_string()))
                .collect::<Vec<_>>()
                .join("/")
        )),
        other => closing_failure(other, bound),
    };
    verdict.worst(ending)
}

/// The verdict when the client's Close did not get a Close back followed by the TCP close.
fn closing_failure(outcome: &Outcome, bound: Duration) -> Verdict {
    Verdict::Failed(match outcome {
        Outcome::Unclean { reset } => format!(
            "{} without answering the client's Close (§5.5.1: MUST send a Close frame in response)",
            if *reset { "reset TCP" } else { "closed TCP" }
        ),
        Outcome::CloseWithoutTcpClose { .. } => {
            format!("answered Close but left TCP open for {bound:?} (§5.5.1: MUST close the TCP connection)")
        }
        Outcome::Timeout => format!("no Close frame and no TCP close within {bound:?}"),
        Outcome::Clean { .. } => unreachable!("handled by the caller"),
    })
}

#[cfg(test)]
mod tests {
    use gatehouse_testkit::rawws::{CloseFrame, End};

    use super::*;
    use crate::payload::{pong, text};

    fn transcript(events: Vec<Event>, close: Option<Option<u16>>, client_first: bool, end: End) -> Transcript {
        Transcript {
            events,
            close: close.map(|code| CloseFrame::parse(&code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default())),
            client_closed_first: client_first,
            end,
            violations: Vec::new(),
            notes: Vec::new(),
            write_errors: Vec::new(),
            server_pings: 0,
        }
    }

    fn verdict(expect: &Expect, t: &Transcript) -> String {
        judge(expect, t, BOUND).to_string()
    }

    const TIMEOUT: End = End::Timeout(BOUND);

    #[test]
    fn an_echo_must_end_with_an_answered_close() {
        let expect = Expect::echo(vec![text("a")]);
        let ok = transcript(vec![text("a")], Some(Some(1000)), true, End::TcpClosed);
        assert_eq!(verdict(&expect, &ok), "OK");
        let empty_answer = transcript(vec![text("a")], Some(None), true, End::TcpClosed);
        assert_eq!(verdict(&expect, &empty_answer), "OK");
        let other_code = transcript(vec![text("a")], Some(Some(1001)), true, End::TcpClosed);
        assert_eq!(verdict(&expect, &other_code), "NON-STRICT");
        for bad in [
            transcript(vec![text("a")], None, true, End::TcpClosed),
            transcript(vec![text("a")], None, true, End::TcpReset("reset".into())),
            transcript(vec![text("a")], Some(Some(1000)), true, TIMEOUT),
            transcript(vec![text("a")], None, true, TIMEOUT),
            transcript(vec![text("a")], Some(Some(1000)), false, End::TcpClosed),
            transcript(vec![text("b")], Some(Some(1000)), true, End::TcpClosed),
            transcript(vec![text("a"), text("a")], Some(Some(1000)), true, End::TcpClosed),
        ] {
            assert_eq!(verdict(&expect, &bad), "FAILED", "{}", bad.summary());
        }
    }

    #[test]
    fn pongs_may_be_coalesced_to_the_last_ping() {
        let expect = Expect::echo(vec![pong("1"), pong("2"), pong("3")]);
        let closed = |events| transcript(events, Some(Some(1000)), true, End::TcpClosed);
        assert_eq!(verdict(&expect, &closed(vec![pong("1"), pong("2"), pong("3")])), "OK");
        assert_eq!(verdict(&expect, &closed(vec![pong("3")])), "OK");
        assert_eq!(verdict(&expect, &closed(vec![pong("1"), pong("2")])), "FAILED");
        assert_eq!(verdict(&expect, &closed(vec![pong("3"), pong("1")])), "FAILED");
    }

    #[test]
    fn a_failure_is_judged_by_its_code_and_by_what_came_before_it() {
        let expect = Expect::fail(1002).after(vec![text("before")]);
        let fail = |events, close, end| transcript(events, close, false, end);
        assert_eq!(
            verdict(&expect, &fail(vec![text("before")], Some(Some(1002)), End::TcpClosed)),
            "OK"
        );
        assert_eq!(
            verdict(&expect, &fail(vec![], Some(Some(1002)), End::TcpClosed)),
            "NON-STRICT"
        );
        assert_eq!(
            verdict(&expect, &fail(vec![text("before")], None, End::TcpClosed)),
            "NON-STRICT"
        );
        assert_eq!(
            verdict(&expect, &fail(vec![text("before")], Some(None), End::TcpClosed)),
            "NON-STRICT"
        );
        assert_eq!(
            verdict(&expect, &fail(vec![text("before")], Some(Some(1011)), End::TcpClosed)),
            "FAILED"
        );
        assert_eq!(
            verdict(&expect, &fail(vec![text("before")], Some(Some(1002)), TIMEOUT)),
            "FAILED"
        );
        assert_eq!(verdict(&expect, &fail(vec![text("before")], None, TIMEOUT)), "FAILED");
        let kept_going = fail(vec![text("before"), pong("after")], Some(Some(1002)), End::TcpClosed);
        assert_eq!(verdict(&expect, &kept_going), "FAILED");
        let lenient = Expect::fail(1007).lenient(&[1002]);
        assert_eq!(
            verdict(&lenient, &fail(vec![], Some(Some(1002)), End::TcpClosed)),
            "NON-STRICT"
        );
        let strict_drop = Expect::fail(1009).on_drop(Verdict::Failed("documented".into()));
        assert_eq!(verdict(&strict_drop, &fail(vec![], None, End::TcpClosed)), "FAILED");
    }

    #[test]
    fn a_close_reply_must_come_and_data_after_the_close_must_not() {
        let expect = Expect::close_reply(&[Some(1000), None]).after(vec![text("maybe")]);
        let reply = |events, code| transcript(events, Some(code), true, End::TcpClosed);
        assert_eq!(verdict(&expect, &reply(vec![text("maybe")], Some(1000))), "OK");
        assert_eq!(verdict(&expect, &reply(vec![], None)), "NON-STRICT");
        assert_eq!(
            verdict(&expect, &reply(vec![text("maybe"), pong("late")], Some(1000))),
            "NON-STRICT"
        );
        assert_eq!(verdict(&expect, &reply(vec![text("other")], Some(1000))), "FAILED");
        assert_eq!(verdict(&expect, &reply(vec![text("maybe")], Some(1001))), "FAILED");
        let dropped = transcript(vec![text("maybe")], None, true, End::TcpClosed);
        assert_eq!(verdict(&expect, &dropped), "FAILED");
    }

    #[test]
    fn violations_fail_and_notes_weaken_any_verdict() {
        let expect = Expect::echo(vec![text("a")]);
        let mut t = transcript(vec![text("a")], Some(Some(1000)), true, End::TcpClosed);
        t.notes.push("a pong after its Close frame".into());
        assert_eq!(verdict(&expect, &t), "NON-STRICT");
        t.violations.push("a masked frame from the server".into());
        assert_eq!(verdict(&expect, &t), "FAILED");
    }

    #[test]
    fn an_undefined_case_accepts_an_echo_or_a_failure() {
        let expect = Expect::EchoOrFail {
            events: vec![text("a")],
            codes: vec![1002],
        };
        let echoed = transcript(vec![text("a")], Some(Some(1000)), true, End::TcpClosed);
        assert_eq!(verdict(&expect, &echoed), "OK");
        let failed = transcript(vec![], Some(Some(1002)), false, End::TcpClosed);
        assert_eq!(verdict(&expect, &failed), "OK");
        let echoed_then_dropped = transcript(vec![text("a")], None, true, End::TcpClosed);
        assert_eq!(verdict(&expect, &echoed_then_dropped), "FAILED");
        let hung = transcript(vec![], None, false, TIMEOUT);
        assert_eq!(verdict(&expect, &hung), "FAILED");
    }
}
