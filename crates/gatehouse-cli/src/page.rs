//! `--page chat|none|DIR`: what a gateway serves at `/`, chosen by the deployment.
//!
//! The gateway crate knows no application, so the choice of the chat page (compiled into the
//! binary from `gatehouse-chat`) is made here, where both are known.

use std::path::PathBuf;
use std::str::FromStr;

use gatehouse_gateway::Page;

/// The value of `--page`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageChoice {
    /// The chat app's page (the JavaScript client's UI), for clusters that run `chat`.
    Chat,
    /// No page: `/` answers 404 (clusters whose clients are programs).
    None,
    /// The deployment's own static files (`/` is `DIR/index.html`). A directory literally named
    /// `chat` or `none` is given as `./chat`.
    Dir(PathBuf),
}

impl FromStr for PageChoice {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "chat" => PageChoice::Chat,
            "none" => PageChoice::None,
            dir => PageChoice::Dir(PathBuf::from(dir)),
        })
    }
}

impl PageChoice {
    /// The page a gateway serves: the explicit choice, or else the page of the app `/ws`
    /// reaches (the first `--app`): the chat page for `chat`, nothing for any other app or
    /// for a gateway serving every app (no `--app`), whose page could belong to none of them.
    pub fn resolve(choice: Option<PageChoice>, first_app: Option<&str>) -> Page {
        let choice = choice.unwrap_or(match first_app {
            Some("chat") => PageChoice::Chat,
            _ => PageChoice::None,
        });
        match choice {
            PageChoice::Chat => Page::Html(gatehouse_chat::WEB_PAGE),
            PageChoice::None => Page::None,
            PageChoice::Dir(dir) => Page::Dir(dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_page_is_the_chat_page_only_for_a_chat_gateway() {
        assert!(matches!(PageChoice::resolve(None, Some("chat")), Page::Html(_)));
        assert!(matches!(PageChoice::resolve(None, Some("echo")), Page::None));
        assert!(matches!(PageChoice::resolve(None, None), Page::None));
    }

    #[test]
    fn an_explicit_page_wins_over_the_app() {
        assert!(matches!(
            PageChoice::resolve(Some(PageChoice::None), Some("chat")),
            Page::None
        ));
        assert!(matches!(
            PageChoice::resolve(Some(PageChoice::Chat), Some("echo")),
            Page::Html(_)
        ));
        let dir = "site".parse::<PageChoice>().unwrap();
        assert!(
            matches!(PageChoice::resolve(Some(dir), Some("chat")), Page::Dir(d) if d.as_path() == std::path::Path::new("site"))
        );
        assert_eq!(
            "./chat".parse::<PageChoice>().unwrap(),
            PageChoice::Dir(PathBuf::from("./chat"))
        );
    }
}
