//! End-to-end behaviour of the chat web page in a real browser: headless Chromium opens the page
//! every gateway serves at `/`, people sign in, type and click, and the tests assert what they
//! see. Two gateways and two chat workers run as separate processes, with a throw-away SQLite
//! database, so every message crosses gateways, workers and the store as in production.
//!
//! Without Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) the tests are skipped on a developer
//! machine and fail when `CI` is set; `scripts/services` installs it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gatehouse_testkit::Cluster;
use gatehouse_testkit::browser::{Browser, Page, chromium_path};
use serde_json::Value;

/// How long a person would reasonably wait for something to show up.
const SHOWS_UP: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_typed_in_one_browser_appears_in_the_other_and_again_after_a_reload() -> Result<()> {
    let Some(browser) = browser_or_skip().await? else {
        return Ok(());
    };
    let chat = ChatCluster::start().await?;
    let ben = sign_in(&browser, &chat.page_url(1), "ben").await?;
    let ann = sign_in(&browser, &chat.page_url(0), "ann").await?;

    send(&ann, "ben", "hello ben, from gateway 0").await?;

    let sent = shown_message(&ann, "hello ben, from gateway 0").await?;
    assert_eq!(sent["conversation"], "d:ann:ben");
    assert_eq!(sent["seq"], "1");
    wait_for_state(&ann, "hello ben, from gateway 0", "acked").await?;
    let received = shown_message(&ben, "hello ben, from gateway 0").await?;
    assert_eq!(received["from"], "ann");
    assert_eq!(received["conversation"], "d:ann:ben");
    assert_eq!(received["id"], sent["id"], "both pages show the one stored message");

    // A reload loses everything in memory; the page signs in again as ben (remembered in
    // localStorage), reopens the conversation and fetches it from the server.
    ben.reload().await?;
    wait_online(&ben).await?;
    let after_reload = shown_message(&ben, "hello ben, from gateway 0").await?;
    assert_eq!(after_reload["id"], received["id"]);
    assert_eq!(after_reload["seq"], "1");
    assert_eq!(
        count_messages(&ben, "hello ben, from gateway 0").await?,
        1,
        "a message is shown once, however it arrived"
    );
    let listed = ben
        .wait_for(
            "document.querySelector('#conversations [data-conversation=\"d:ann:ben\"]')?.innerText",
            SHOWS_UP,
        )
        .await?;
    assert!(listed.as_str().unwrap_or_default().contains("ann"), "{listed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_reaches_a_member_signed_in_on_the_other_gateway() -> Result<()> {
    let Some(browser) = browser_or_skip().await? else {
        return Ok(());
    };
    let chat = ChatCluster::start().await?;
    let ann = sign_in(&browser, &chat.page_url(0), "ann").await?;
    let ben = sign_in(&browser, &chat.page_url(1), "ben").await?;

    ann.type_text("#group-name", "team").await?;
    ann.click("#create-group").await?;
    wait_open_conversation(&ann, "g:team").await?;
    // Groups are invite-only: ann invites ben, who accepts the invitation shown on his page.
    ann.type_text("#invite-uid", "ben").await?;
    ann.click("#invite").await?;
    let invitation = "#invitations li[data-group=\"team\"] button.accept";
    see(
        &ben,
        &format!("!!document.querySelector({})", serde_json::to_string(invitation)?),
        "ann's invitation",
    )
    .await?;
    ben.click(invitation).await?;
    wait_open_conversation(&ben, "g:team").await?;

    send(&ann, "group:team", "hi team").await?;

    let received = shown_message(&ben, "hi team").await?;
    assert_eq!(received["conversation"], "g:team");
    assert_eq!(received["from"], "ann");
    wait_for_state(&ann, "hi team", "acked").await?;
    ben.click("#members").await?;
    let members = ben
        .wait_for(
            "[...document.querySelectorAll('#member-list li')].map(li => li.innerText).join(',')",
            SHOWS_UP,
        )
        .await?;
    assert_eq!(members, "ann,ben");
    let roles = ben
        .eval("[...document.querySelectorAll('#member-list li')].map(li => li.dataset.role).join(',')")
        .await?;
    assert_eq!(roles, "owner,member");
    assert_eq!(
        ben.eval("document.querySelectorAll('#invitations li').length").await?,
        0,
        "the used invitation is gone"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sign_in_is_explained_on_the_page() -> Result<()> {
    let Some(browser) = browser_or_skip().await? else {
        return Ok(());
    };
    let chat = ChatCluster::start().await?;
    let page = browser.new_page(&chat.page_url(0)).await?;

    page.type_text("#uid", "not a valid uid!").await?;
    page.click("#login").await?;

    let reason = page
        .wait_for("document.querySelector('#login-error').textContent", SHOWS_UP)
        .await?;
    assert!(
        reason.as_str().unwrap_or_default().contains("refused the sign-in"),
        "{reason}"
    );
    assert_ne!(page.text("#status").await?, "online");
    Ok(())
}

/// A browser, or `None` (the test is skipped) when Chromium is not installed outside CI.
async fn browser_or_skip() -> Result<Option<Browser>> {
    let chromium = chromium_path();
    if chromium.exists() {
        return Ok(Some(Browser::launch().await?));
    }
    if std::env::var_os("CI").is_some() {
        bail!(
            "{} is missing and CI is set: browser tests must run in CI (scripts/services installs chromium)",
            chromium.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found; install Debian's `chromium` (scripts/services does) or set CHROMIUM to run the browser tests",
        chromium.display()
    );
    Ok(None)
}

/// Two gateways and two chat workers in insecure dev mode (bare `?uid=` sign-in needs it on
/// both), sharing a fresh SQLite database that is removed afterwards.
struct ChatCluster {
    cluster: Cluster,
    _database: ScratchDir,
}

impl ChatCluster {
    async fn start() -> Result<ChatCluster> {
        let database = ScratchDir::new()?;
        let url = format!("sqlite://{}", database.0.join("chat.db").display());
        let cluster = Cluster::builder()
            .gateways(2)
            .workers("chat", 2)
            .gateway_args(&["--insecure-dev-auth"])
            .worker_args(&["--database-url", &url, "--insecure-dev-auth"])
            .start()
            .await?;
        Ok(ChatCluster {
            cluster,
            _database: database,
        })
    }

    /// The chat page of gateway `index`.
    fn page_url(&self, index: usize) -> String {
        format!("http://{}/", self.cluster.gateways[index].addr("ws"))
    }
}

/// A directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("gatehouse-web-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the page, signs in with the form as `uid`, and waits until it says "online".
async fn sign_in(browser: &Browser, url: &str, uid: &str) -> Result<Page> {
    let page = browser.new_page(url).await?;
    page.type_text("#uid", uid).await?;
    page.click("#login").await?;
    wait_online(&page).await?;
    Ok(page)
}

async fn wait_online(page: &Page) -> Result<()> {
    see(
        page,
        "document.querySelector('#status').textContent === 'online'",
        "the page online",
    )
    .await?;
    Ok(())
}

/// Types `text` for `to` (a uid or `group:<name>`) and presses Send.
async fn send(page: &Page, to: &str, text: &str) -> Result<()> {
    page.type_text("#to", to).await?;
    page.type_text("#text", text).await?;
    page.click("#send").await
}

/// Waits until the open conversation shows a stored message (it has a seq) with `text`;
/// returns its data attributes.
async fn shown_message(page: &Page, text: &str) -> Result<Value> {
    let text = serde_json::to_string(text)?;
    see(
        page,
        &format!(
            "(() => {{
                const msg = [...document.querySelectorAll('#messages .msg')]
                    .find(m => m.querySelector('.text').textContent === {text} && m.dataset.seq !== '');
                return msg && {{...msg.dataset}};
            }})()"
        ),
        &format!("the message {text}"),
    )
    .await
}

async fn wait_for_state(page: &Page, text: &str, state: &str) -> Result<()> {
    let text = serde_json::to_string(text)?;
    let state_js = serde_json::to_string(state)?;
    see(
        page,
        &format!(
            "[...document.querySelectorAll('#messages .msg')]
                .some(m => m.querySelector('.text').textContent === {text} && m.dataset.state === {state_js})"
        ),
        &format!("{text} {state}"),
    )
    .await?;
    Ok(())
}

async fn wait_open_conversation(page: &Page, conversation: &str) -> Result<()> {
    let conversation_js = serde_json::to_string(conversation)?;
    see(
        page,
        &format!("document.querySelector('#messages').dataset.conversation === {conversation_js}"),
        &format!("{conversation} open"),
    )
    .await?;
    Ok(())
}

async fn count_messages(page: &Page, text: &str) -> Result<u64> {
    let text = serde_json::to_string(text)?;
    let count = page
        .eval(&format!(
            "[...document.querySelectorAll('#messages .msg .text')].filter(t => t.textContent === {text}).length"
        ))
        .await?;
    Ok(count.as_u64().unwrap_or_default())
}

/// [`Page::wait_for`] that leaves a screenshot behind when the page never shows `what`.
async fn see(page: &Page, condition: &str, what: &str) -> Result<Value> {
    match page.wait_for(condition, SHOWS_UP).await {
        Ok(value) => Ok(value),
        Err(error) => {
            let shot = std::env::temp_dir().join(format!(
                "gatehouse-web-{}-{}.png",
                std::process::id(),
                what.chars().filter(char::is_ascii_alphanumeric).collect::<String>()
            ));
            let saved = match page.screenshot(&shot).await {
                Ok(()) => format!("screenshot: {}", shot.display()),
                Err(shot_error) => format!("no screenshot: {shot_error:#}"),
            };
            Err(error.context(format!("the page never showed {what} ({saved})")))
        }
    }
}
