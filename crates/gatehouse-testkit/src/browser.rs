//! A tiny headless-Chromium driver over the Chrome DevTools Protocol (CDP), so end-to-end tests
//! can drive the web page a person would use, not only raw WebSocket clients.
//!
//! It starts `chromium --headless` with a throw-away profile, talks CDP over the browser's own
//! WebSocket (one connection, pages multiplexed by `sessionId`: `Target.attachToTarget` with
//! `flatten: true`) and offers what a test needs: open a page, evaluate JavaScript, wait for a
//! condition, fill inputs, click, reload and take a screenshot. Everything else a test does on a
//! page is plain JavaScript through [`Page::eval`], which keeps this driver small.
//!
//! Only crates the testkit already has are used; the base64 of screenshots is decoded by hand.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How long one CDP command may take before the driver gives up on the browser.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to start (a cold start on a busy 2-core machine is slow).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a navigation or reload may take to fire its load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Page::wait_for`] re-evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many console lines (and browser stderr lines) are kept for failure messages.
const LOG_LINES: usize = 400;

/// The Chromium executable tests use: `$CHROMIUM` if set, else `/usr/bin/chromium` (Debian's
/// package).
pub fn chromium_path() -> PathBuf {
    crate::services::chromium_path()
}

/// A running headless Chromium with a fresh profile; killed (with its helper processes) and its
/// profile removed when dropped, so a failing test leaves nothing behind.
pub struct Browser {
    cdp: Arc<Cdp>,
    tasks: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<String>>>,
    // Dropped last: kills the process group, then removes the profile directory.
    _process: BrowserProcess,
}

/// One open tab, attached over its own CDP session, in its own browser context (so two pages
/// never share cookies or localStorage, like two people on two machines). Closed when dropped.
pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
    target: String,
    context: String,
    console: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Starts Chromium ([`chromium_path`]) headless and connects to its DevTools endpoint,
    /// which it announces on stderr as `DevTools listening on ws://…` (port 0 avoids clashes
    /// between tests running in parallel).
    /// The test needs Chromium ([`require`](crate::require)`(Service::Chromium)`, which this
    /// calls).
    pub async fn launch() -> Result<Browser> {
        crate::require(crate::Service::Chromium);
        let executable = chromium_path();
        let profile = unique_temp_dir()?;
        let child = Command::new(&executable)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Containers have a tiny /dev/shm; renderers crash without this.
                "--disable-dev-shm-usage",
                // Every page of a test is "in the background" but must keep its timers running
                // (reconnect back-off, presence polling) at full speed.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so Drop can kill the renderer and helper processes too.
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(error).with_context(|| format!("starting {}", executable.display()));
            }
        };
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let process = BrowserProcess { child, profile };

        // Chromium blocks if its stderr fills up: a thread keeps draining it for the whole run.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (endpoint_tx, endpoint_rx) = oneshot::channel::<String>();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut endpoint_tx = Some(endpoint_tx);
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("DevTools listening on ")
                    && let Some(tx) = endpoint_tx.take()
                {
                    let _ = tx.send(line[at + "DevTools listening on ".len()..].trim().to_owned());
                }
                push_bounded(&sink, line);
            }
        });
        let endpoint = match tokio::time::timeout(LAUNCH_TIMEOUT, endpoint_rx).await {
            Ok(Ok(endpoint)) => endpoint,
            Ok(Err(_)) => bail!(
                "chromium exited before announcing its DevTools endpoint:\n{}",
                tail(&stderr)
            ),
            Err(_) => bail!(
                "chromium did not announce its DevTools endpoint within {LAUNCH_TIMEOUT:?}:\n{}",
                tail(&stderr)
            ),
        };
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .with_context(|| format!("connecting to chromium at {endpoint}"))?;
        let (cdp, tasks) = Cdp::start(socket);
        Ok(Browser {
            cdp,
            tasks,
            stderr,
            _process: process,
        })
    }

    /// Opens `url` in a new tab with its own browser context (fresh cookies and localStorage)
    /// and waits for its load event.
    pub async fn new_page(&self, url: &str) -> Result<Page> {
        let context = self
            .cdp
            .call(None, "Target.createBrowserContext", json!({"disposeOnDetach": true}))
            .await?["browserContextId"]
            .as_str()
            .ok_or_else(|| anyhow!("no browserContextId"))?
            .to_owned();
        let target = self
            .cdp
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context}),
            )
            .await?["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("no targetId"))?
            .to_owned();
        let session = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await?["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId"))?
            .to_owned();
        let console = Arc::new(Mutex::new(Vec::new()));
        self.cdp
            .consoles
            .lock()
            .expect("console map poisoned")
            .insert(session.clone(), console.clone());
        let page = Page {
            cdp: self.cdp.clone(),
            session,
            target,
            context,
            console,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await?;
        }
        page.goto(url).await?;
        Ok(page)
    }

    /// The last lines Chromium wrote to stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Page {
    /// Navigates to `url` and waits for the load event, so the page's scripts have run.
    pub async fn goto(&self, url: &str) -> Result<()> {
        let loaded = self.cdp.events.subscribe();
        let answer = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = answer.get("errorText").and_then(Value::as_str) {
            bail!("navigating to {url}: {error}");
        }
        self.wait_for_load(loaded).await
    }

    /// Reloads the page (as a person pressing F5 would: in-memory state is lost, localStorage
    /// survives) and waits for the load event.
    pub async fn reload(&self) -> Result<()> {
        let loaded = self.cdp.events.subscribe();
        self.call("Page.reload", json!({"ignoreCache": true})).await?;
        self.wait_for_load(loaded).await
    }

    /// Evaluates a JavaScript expression in the page and returns its value as JSON (promises
    /// are awaited). A thrown exception becomes an `Err` carrying the JavaScript error.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": js,
                    "returnByValue": true,
                    "awaitPromise": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            let reason = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("unknown exception");
            bail!("evaluating `{js}` threw: {reason}");
        }
        Ok(answer["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Polls the JavaScript `condition` until it is truthy and returns its value; fails after
    /// `timeout` with the last value or error and the page's console output. This is how tests
    /// wait for what a user would see, instead of sleeping.
    pub async fn wait_for(&self, condition: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A reload in progress destroys the context: that is "not yet", not a failure.
            let last = match self.eval(condition).await {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => format!("last value: {value}"),
                Err(error) => format!("last error: {error:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "`{condition}` did not become true within {timeout:?} ({last})\npage console:\n{}",
                    self.console().join("\n")
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Fills the input or textarea matching `selector` with `text` as typing would: focus,
    /// set the value, fire `input` and `change` (pages listen to those, not to CDP).
    pub async fn type_text(&self, selector: &str, text: &str) -> Result<()> {
        let selector_js = js_string(selector);
        let text_js = js_string(text);
        self.eval(&format!(
            "(() => {{
                const el = document.querySelector({selector_js});
                if (!el) throw new Error('no element matches ' + {selector_js});
                el.focus();
                el.value = {text_js};
                el.dispatchEvent(new Event('input', {{bubbles: true}}));
                el.dispatchEvent(new Event('change', {{bubbles: true}}));
                return true;
            }})()"
        ))
        .await?;
        Ok(())
    }

    /// Clicks the element matching `selector`; fails if there is none or it is disabled (a
    /// person could not click it either).
    pub async fn click(&self, selector: &str) -> Result<()> {
        let selector_js = js_string(selector);
        self.eval(&format!(
            "(() => {{
                const el = document.querySelector({selector_js});
                if (!el) throw new Error('no element matches ' + {selector_js});
                if (el.disabled) throw new Error({selector_js} + ' is disabled');
                el.click();
                return true;
            }})()"
        ))
        .await?;
        Ok(())
    }

    /// The visible text of the element matching `selector` (`innerText`), or an error if none.
    pub async fn text(&self, selector: &str) -> Result<String> {
        let selector_js = js_string(selector);
        let value = self
            .eval(&format!(
                "(() => {{
                    const el = document.querySelector({selector_js});
                    if (!el) throw new Error('no element matches ' + {selector_js});
                    return el.innerText;
                }})()"
            ))
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG of the visible page to `path`: the first thing to look at when a browser
    /// test fails.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> Result<()> {
        let answer = self.call("Page.captureScreenshot", json!({"format": "png"})).await?;
        let data = answer["data"].as_str().ok_or_else(|| anyhow!("no screenshot data"))?;
        let png = decode_base64(data)?;
        std::fs::write(path.as_ref(), png).with_context(|| format!("writing {}", path.as_ref().display()))
    }

    /// Console messages, uncaught exceptions and browser log entries of this page so far.
    pub fn console(&self) -> Vec<String> {
        self.console.lock().expect("console poisoned").clone()
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    async fn wait_for_load(&self, mut events: broadcast::Receiver<Event>) -> Result<()> {
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => bail!("the page did not finish loading within {LOAD_TIMEOUT:?}"),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => bail!("the browser went away"),
                Ok(Ok(event))
                    if event.method == "Page.loadEventFired"
                        && event.session.as_deref() == Some(self.session.as_str()) =>
                {
                    return Ok(());
                }
                Ok(Ok(_)) => continue,
            }
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Fire and forget: Drop cannot await, and the browser goes away with the test anyway.
        self.cdp
            .send_detached(None, "Target.closeTarget", json!({"targetId": self.target}));
        self.cdp.send_detached(
            None,
            "Target.disposeBrowserContext",
            json!({"browserContextId": self.context}),
        );
        self.cdp
            .consoles
            .lock()
            .expect("console map poisoned")
            .remove(&self.session);
    }
}

/// The browser process and its profile directory.
struct BrowserProcess {
    child: Child,
    profile: PathBuf,
}

impl Drop for BrowserProcess {
    fn drop(&mut self) {
        // The whole process group: the browser, its zygotes, renderers and utility processes.
        let pid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helpers may still be closing files in the profile for a moment after the kill.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One CDP event, tagged with the session (page) it came from.
#[derive(Clone, Debug)]
struct Event {
    session: Option<String>,
    method: String,
}

type Reply = oneshot::Sender<Result<Value>>;
type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The shared CDP connection: commands go out through a writer task, a reader task routes
/// answers to their callers by `id` and broadcasts events.
struct Cdp {
    outgoing: mpsc::UnboundedSender<String>,
    pending: Mutex<HashMap<u64, Reply>>,
    next_id: AtomicU64,
    events: broadcast::Sender<Event>,
    consoles: Mutex<HashMap<String, Arc<Mutex<Vec<String>>>>>,
}

impl Cdp {
    fn start(socket: Socket) -> (Arc<Cdp>, Vec<JoinHandle<()>>) {
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<String>();
        let (events, _) = broadcast::channel(1024);
        let cdp = Arc::new(Cdp {
            outgoing,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            events,
            consoles: Mutex::new(HashMap::new()),
        });
        let writer = tokio::spawn(async move {
            while let Some(text) = queue.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let reader_cdp = cdp.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message
                    && let Ok(value) = serde_json::from_str::<Value>(&text)
                {
                    reader_cdp.dispatch(value);
                }
            }
            // The browser is gone: fail every waiting call instead of letting it time out.
            reader_cdp.pending.lock().expect("pending poisoned").clear();
        });
        (cdp, vec![writer, reader])
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending poisoned").insert(id, tx);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        if self.outgoing.send(command.to_string()).is_err() {
            self.pending.lock().expect("pending poisoned").remove(&id);
            bail!("{method}: the browser connection is closed");
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer.with_context(|| format!("CDP {method}")),
            Ok(Err(_)) => bail!("{method}: the browser connection closed"),
            Err(_) => {
                self.pending.lock().expect("pending poisoned").remove(&id);
                bail!("{method}: no answer from the browser within {CALL_TIMEOUT:?}")
            }
        }
    }

    /// Sends a command nobody waits for (its answer is dropped by the reader).
    fn send_detached(&self, session: Option<&str>, method: &str, params: Value) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let _ = self.outgoing.send(command.to_string());
    }

    fn dispatch(&self, value: Value) {
        let session = value["sessionId"].as_str().map(str::to_owned);
        if let Some(id) = value["id"].as_u64() {
            let waiter = self.pending.lock().expect("pending poisoned").remove(&id);
            if let Some(waiter) = waiter {
                let answer = match value.get("error") {
                    Some(error) => Err(anyhow!("browser error: {error}")),
                    None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = waiter.send(answer);
            }
            return;
        }
        let Some(method) = value["method"].as_str() else {
            return;
        };
        if let Some(line) = console_line(method, &value["params"])
            && let Some(session) = &session
            && let Some(console) = self.consoles.lock().expect("console map poisoned").get(session)
        {
            push_bounded(console, line);
        }
        let _ = self.events.send(Event {
            session,
            method: method.to_owned(),
        });
    }
}

/// Formats console calls, uncaught exceptions and log entries as one line each.
fn console_line(method: &str, params: &Value) -> Option<String> {
    match method {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = params["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|arg| match arg.get("value") {
                            Some(Value::String(text)) => text.clone(),
                            Some(other) => other.to_string(),
                            None => arg["description"].as_str().unwrap_or("?").to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(format!(
                "console.{}: {}",
                params["type"].as_str().unwrap_or("log"),
                args.join(" ")
            ))
        }
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception");
            Some(format!("uncaught: {text}"))
        }
        "Log.entryAdded" => {
            let entry = &params["entry"];
            Some(format!(
                "log.{}: {} {}",
                entry["level"].as_str().unwrap_or("info"),
                entry["text"].as_str().unwrap_or_default(),
                entry["url"].as_str().unwrap_or_default()
            ))
        }
        _ => None,
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A JavaScript string literal (JSON strings are valid JavaScript).
fn js_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn push_bounded(lines: &Mutex<Vec<String>>, line: String) {
    let mut lines = lines.lock().expect("log poisoned");
    if lines.len() >= LOG_LINES {
        lines.remove(0);
    }
    lines.push(line);
}

fn tail(lines: &Mutex<Vec<String>>) -> String {
    let lines = lines.lock().expect("log poisoned");
    let start = lines.len().saturating_sub(40);
    lines[start..].join("\n")
}

/// A new, empty directory under the system temp dir, unique per process and call.
fn unique_temp_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-chromium-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Decodes standard base64 (with or without padding, whitespace ignored).
fn decode_base64(text: &str) -> Result<Vec<u8>> {
    fn sextet(byte: u8) -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some(u32::from(byte - b'A')),
            b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes() {
        if byte == b'=' {
            break;
        }
        if byte.is_ascii_whitespace() {
            continue;
        }
        let value = sextet(byte).ok_or_else(|| anyhow!("invalid base64 byte {byte:#04x}"))?;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9vYg").unwrap(), b"foob");
        assert_eq!(
            decode_base64("iVBO\nRw0K").unwrap(),
            [0x89, b'P', b'N', b'G', 0x0d, 0x0a]
        );
        assert!(decode_base64("Zm9v!").is_err());
    }

    #[test]
    fn truthiness_follows_javascript() {
        assert!(!truthy(&json!(null)));
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(!truthy(&json!(false)));
        assert!(truthy(&json!("online")));
        assert!(truthy(&json!([])));
        assert!(truthy(&json!(2)));
    }
}
