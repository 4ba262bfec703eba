//! End-to-end behaviour of the chat web page in a real browser: headless Chromium opens the page
//! the gateways serve at `/` (`--page chat`), people sign in, type and click, and the tests assert what they
//! see. Two gateways and two chat workers run as separate processes, with a throw-away SQLite
//! database, so every message crosses gateways, workers and the store as in production.
//!
//! Every test needs Chromium (`/usr/bin/chromium`, or `$CHROMIUM`; `scripts/services` installs
//! it), hence the module `needs_chromium`: without it, the tests fail under `CI` and are reported
//! as skipped by `scripts/test` elsewhere (`gatehouse_testkit::services`).

mod needs_chromium {
    use std::path::PathBuf;
    use std::time::Duration;

    use anyhow::{Context, Result};
    use gatehouse_testkit::Cluster;
    use gatehouse_testkit::browser::{Browser, Page};
    use serde_json::Value;

    /// How long a person would reasonably wait for something to show up.
    const SHOWS_UP: Duration = Duration::from_secs(15);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_direct_message_typed_in_one_browser_appears_in_the_other_and_again_after_a_reload() -> Result<()> {
        let browser = Browser::launch().await?;
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
        let browser = Browser::launch().await?;
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
        let browser = Browser::launch().await?;
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
                .gateway_args(&["--insecure-dev-auth", "--page", "chat"])
                // A short presence grace, so that an offline dot does not keep a test waiting.
                .worker_args(&[
                    "--database-url",
                    &url,
                    "--insecure-dev-auth",
                    "--chat-presence-grace",
                    "1s",
                ])
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

    // ---- protocol 2 features, two browsers each; every test leaves a screenshot of its feature ----

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_dots_and_the_typing_line_follow_the_other_person_live() -> Result<()> {
        let browser = Browser::launch().await?;
        let chat = ChatCluster::start().await?;
        let ann = sign_in(&browser, &chat.page_url(0), "ann").await?;
        let ben = sign_in(&browser, &chat.page_url(1), "ben").await?;
        send(&ann, "ben", "are you there?").await?;
        shown_message(&ben, "are you there?").await?;

        // Presence: ben's page shows ann's dot green, in the online list and the conversation list.
        see(
            &ben,
            &presence_of("#online li[data-uid=\"ann\"]", "online"),
            "ann online",
        )
        .await?;
        see(
            &ben,
            &presence_of("#conversations [data-conversation=\"d:ann:ben\"]", "online"),
            "ann's conversation dot online",
        )
        .await?;
        feature_screenshot(&ben, "presence").await?;

        // Typing: ann types without sending; ben's typing line names her, and clears when she sends.
        ann.type_text("#to", "ben").await?;
        ann.type_text("#text", "typing something").await?;
        see(
            &ben,
            "document.querySelector('#typing').textContent === 'ann is typing…'",
            "ann typing",
        )
        .await?;
        feature_screenshot(&ben, "typing").await?;
        ann.click("#send").await?;
        shown_message(&ben, "typing something").await?;
        see(
            &ben,
            "document.querySelector('#typing').textContent === ''",
            "the typing line cleared",
        )
        .await?;

        // Ann signs out: after the server's grace period her dot turns grey on ben's page.
        ann.click("#logout").await?;
        see(
            &ben,
            &presence_of("#conversations [data-conversation=\"d:ann:ben\"]", "offline"),
            "ann offline",
        )
        .await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sender_sees_its_message_delivered_then_read() -> Result<()> {
        let browser = Browser::launch().await?;
        let chat = ChatCluster::start().await?;
        let ann = sign_in(&browser, &chat.page_url(0), "ann").await?;
        let ben = sign_in(&browser, &chat.page_url(1), "ben").await?;
        // Ben has another conversation open, so ann's message reaches his device unread.
        ben.type_text("#group-name", "elsewhere").await?;
        ben.click("#create-group").await?;
        wait_open_conversation(&ben, "g:elsewhere").await?;

        send(&ann, "ben", "did you get this?").await?;
        see(
            &ann,
            &receipt_of("did you get this?", "delivered"),
            "the message delivered",
        )
        .await?;
        see(
            &ben,
            "document.querySelector('#conversations [data-conversation=\"d:ann:ben\"]')?.dataset.unread === '1'",
            "one unread on ben's page",
        )
        .await?;

        ben.click("#conversations [data-conversation=\"d:ann:ben\"]").await?;
        shown_message(&ben, "did you get this?").await?;
        see(&ann, &receipt_of("did you get this?", "read"), "the message read").await?;
        see_online(&ann, "d:ann:ben").await?;
        feature_screenshot(&ann, "receipts").await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_and_a_delete_reach_the_other_browser_and_survive_a_reload() -> Result<()> {
        let browser = Browser::launch().await?;
        let chat = ChatCluster::start().await?;
        let ann = sign_in(&browser, &chat.page_url(0), "ann").await?;
        let ben = sign_in(&browser, &chat.page_url(1), "ben").await?;
        send(&ann, "ben", "see you at 10").await?;
        send(&ann, "ben", "this was a mistake").await?;
        shown_message(&ben, "this was a mistake").await?;

        ann.click(&action_of(&ann, "see you at 10", "edit").await?).await?;
        ann.type_text("#text", "see you at 11").await?;
        ann.click("#send").await?;
        let edited = shown_message(&ben, "see you at 11").await?;
        assert!(edited.get("edited").is_some(), "marked edited: {edited}");
        assert_eq!(count_messages(&ben, "see you at 10").await?, 0, "the old text is gone");
        see_online(&ben, "d:ann:ben").await?;
        feature_screenshot(&ben, "edit").await?;

        ann.click(&action_of(&ann, "this was a mistake", "delete").await?)
            .await?;
        ann.click(&action_of(&ann, "this was a mistake", "delete").await?)
            .await?;
        see(
        &ben,
        "[...document.querySelectorAll('#messages .msg[data-deleted]')].some(m => m.querySelector('.text').textContent === 'message deleted')",
        "the tombstone",
    )
    .await?;
        assert_eq!(count_messages(&ben, "this was a mistake").await?, 0);
        feature_screenshot(&ben, "delete").await?;

        // A reload fetches history: the final state, not the original texts.
        ben.reload().await?;
        wait_online(&ben).await?;
        shown_message(&ben, "see you at 11").await?;
        see(
            &ben,
            "!!document.querySelector('#messages .msg[data-deleted]')",
            "the tombstone after a reload",
        )
        .await?;
        assert_eq!(count_messages(&ben, "this was a mistake").await?, 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_quotes_its_message_and_reactions_are_counted_on_both_pages() -> Result<()> {
        let browser = Browser::launch().await?;
        let chat = ChatCluster::start().await?;
        let ann = sign_in(&browser, &chat.page_url(0), "ann").await?;
        let ben = sign_in(&browser, &chat.page_url(1), "ben").await?;
        send(&ann, "ben", "lunch today?").await?;
        shown_message(&ben, "lunch today?").await?;

        ben.click(&action_of(&ben, "lunch today?", "reply").await?).await?;
        ben.type_text("#text", "yes, at noon").await?;
        ben.click("#send").await?;
        shown_message(&ann, "yes, at noon").await?;
        see(
            &ann,
            &format!(
                "{}?.querySelector('.reply-to')?.textContent === '↪ ann: lunch today?'",
                message_js("yes, at noon")
            ),
            "the quoted message",
        )
        .await?;
        see_online(&ann, "d:ann:ben").await?;
        feature_screenshot(&ann, "reply").await?;

        ann.click(&action_of(&ann, "yes, at noon", "react").await?).await?;
        ben.click(&action_of(&ben, "yes, at noon", "react").await?).await?;
        for page in [&ann, &ben] {
            see(
                page,
                &format!(
                    "{}?.querySelector('.reactions [data-emoji=\"👍\"]')?.dataset.count === '2'",
                    message_js("yes, at noon")
                ),
                "two 👍",
            )
            .await?;
        }
        feature_screenshot(&ben, "reactions").await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_search_box_finds_messages_with_the_words_marked_and_opens_them() -> Result<()> {
        let browser = Browser::launch().await?;
        let chat = ChatCluster::start().await?;
        let ann = sign_in(&browser, &chat.page_url(0), "ann").await?;
        let ben = sign_in(&browser, &chat.page_url(1), "ben").await?;
        send(&ann, "ben", "the deploy failed again").await?;
        send(&ann, "ben", "lunch at noon").await?;
        shown_message(&ben, "lunch at noon").await?;
        ben.click("#conversations [data-conversation=\"d:ann:ben\"]").await?;

        ben.type_text("#search", "deploy").await?;
        ben.click("#search-go").await?;
        let hits = see(
        &ben,
        "(() => { const hits = [...document.querySelectorAll('#search-results li')];
                  return hits.length > 0 && hits.map(li => [li.dataset.conversation, li.querySelector('mark')?.textContent]); })()",
        "search results",
    )
    .await?;
        assert_eq!(hits, serde_json::json!([["d:ann:ben", "deploy"]]));
        see_online(&ben, "d:ann:ben").await?;
        feature_screenshot(&ben, "search").await?;
        Ok(())
    }

    /// A script that finds the stored `.msg` whose text is `text` (or undefined).
    fn message_js(text: &str) -> String {
        let text = serde_json::to_string(text).expect("a string");
        format!(
            "[...document.querySelectorAll('#messages .msg')].find(m => m.querySelector('.text').textContent === {text} && m.dataset.seq !== '')"
        )
    }

    /// The selector of an action button (`reply`, `react`, `edit`, `delete`) of the stored message
    /// `text`, by its id (stable across re-renders).
    async fn action_of(page: &Page, text: &str, action: &str) -> Result<String> {
        let message = shown_message(page, text).await?;
        let id = message["id"].as_str().unwrap_or_default();
        Ok(format!("#messages .msg[data-id=\"{id}\"] .actions button.{action}"))
    }

    /// Waits until the peer of the direct conversation shows as online (its presence dot).
    async fn see_online(page: &Page, conversation: &str) -> Result<()> {
        let selector = format!("#conversations [data-conversation=\"{conversation}\"]");
        see(
            page,
            &presence_of(&selector, "online"),
            &format!("{conversation}'s peer online"),
        )
        .await?;
        Ok(())
    }

    fn presence_of(selector: &str, state: &str) -> String {
        let selector = serde_json::to_string(selector).expect("a string");
        format!("document.querySelector({selector})?.dataset.presence === '{state}'")
    }

    fn receipt_of(text: &str, receipt: &str) -> String {
        format!("{}?.dataset.receipt === '{receipt}'", message_js(text))
    }

    /// Saves what the page shows now as the screenshot of `feature`: into the directory named by
    /// `GATEHOUSE_SCREENSHOTS` (`docs/screenshots` refreshes the ones the docs show), else into the
    /// system temp dir, so that a test run does not rewrite files in the repository.
    async fn feature_screenshot(page: &Page, feature: &str) -> Result<()> {
        let dir = std::env::var_os("GATEHOUSE_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("chat-{feature}.png"));
        page.screenshot(&path).await
    }
}
