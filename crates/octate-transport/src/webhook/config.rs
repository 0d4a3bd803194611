//! Settings of webhook delivery, checked once at start.

use std::time::Duration;

use hyper::Uri;

/// Where and how webhooks are delivered.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Receivers; every event goes to each (`http://` or `https://`).
    pub urls: Vec<Uri>,
    /// The shared secret requests are signed with.
    pub secret: String,
    /// Most attempts of one delivery, the first included.
    pub max_attempts: u32,
    /// Most deliveries waiting; the oldest are dropped beyond it.
    pub queue_capacity: usize,
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// The first retry waits up to this; each further one up to twice as long.
    pub retry_base: Duration,
    /// Most requests in flight to one URL.
    pub max_in_flight: usize,
}

/// Why webhook settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    /// A URL does not parse or is not `http`/`https` with a host.
    #[error("not an http:// or https:// URL: {0}")]
    BadUrl(String),
    /// URLs without a secret: receivers could not tell our requests from forgeries.
    #[error("OCTATE_WEBHOOK_SECRET is required with OCTATE_WEBHOOK_URLS")]
    NoSecret,
    /// A limit that must be at least 1 is 0.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
}

impl WebhookConfig {
    /// Settings for the comma-separated `urls` signed with `secret`, with the defaults
    /// (8 attempts from 5 s, 10 s timeout, 10,000 queued, 8 in flight per URL); `None`
    /// when no URL is given (webhooks off).
    pub fn parse(urls: &str, secret: Option<&str>) -> Result<Option<Self>, WebhookConfigError> {
        let urls = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                let uri: Uri = u
                    .parse()
                    .map_err(|_| WebhookConfigError::BadUrl(u.to_owned()))?;
                let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
                if scheme_ok && uri.host().is_some() {
                    Ok(uri)
                } else {
                    Err(WebhookConfigError::BadUrl(u.to_owned()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Ok(None);
        }
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or(WebhookConfigError::NoSecret)?;
        Ok(Some(Self {
            urls,
            secret: secret.to_owned(),
            max_attempts: 8,
            queue_capacity: 10_000,
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(5),
            max_in_flight: 8,
        }))
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), WebhookConfigError> {
        let zero = [
            ("OCTATE_WEBHOOK_MAX_ATTEMPTS", self.max_attempts == 0),
            ("OCTATE_WEBHOOK_QUEUE", self.queue_capacity == 0),
            ("OCTATE_WEBHOOK_TIMEOUT_MS", self.timeout.is_zero()),
            ("OCTATE_WEBHOOK_RETRY_BASE_MS", self.retry_base.is_zero()),
            ("OCTATE_WEBHOOK_CONCURRENCY", self.max_in_flight == 0),
        ];
        match zero.into_iter().find(|(_, z)| *z) {
            Some((name, _)) => Err(WebhookConfigError::Zero(name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_url_means_off_and_urls_need_a_secret() {
        assert!(WebhookConfig::parse("", None).unwrap().is_none());
        assert!(WebhookConfig::parse(" , ", Some("s")).unwrap().is_none());
        assert_eq!(
            WebhookConfig::parse("https://a.example/hook", None).unwrap_err(),
            WebhookConfigError::NoSecret
        );
        let config = WebhookConfig::parse("https://a.example/h, http://127.0.0.1:9/x", Some("s"))
            .unwrap()
            .unwrap();
        assert_eq!(config.urls.len(), 2);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        for bad in ["ftp://a.example/", "/relative", "a.example", "http://"] {
            assert!(
                matches!(
                    WebhookConfig::parse(bad, Some("s")),
                    Err(WebhookConfigError::BadUrl(_))
                ),
                "{bad}"
            );
        }
    }
}
