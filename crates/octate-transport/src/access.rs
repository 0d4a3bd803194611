//! Who may connect: address lists (allow, deny, admin) and the client address of a
//! request that came through a trusted reverse proxy (`X-Forwarded-For`).
//!
//! A connection's peer address is checked at accept, before any byte is parsed; a
//! connection from a trusted proxy is checked per request, on the client address the
//! proxy reports. Every refusal goes through [`refused`], which counts and logs it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hyper::HeaderMap;
use ipnet::IpNet;
use tracing::info;

use crate::app::App;

/// A list of networks (CIDRs such as `10.0.0.0/8` or `2001:db8::/32`, or bare addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressList(Vec<IpNet>);

/// A list entry that is neither a network nor an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP network (e.g. 10.0.0.0/8, 2001:db8::/32) or address")]
pub struct BadNetwork(pub String);

impl AddressList {
    /// Parses a comma-separated list; empty items are skipped.
    pub fn parse(list: &str) -> Result<Self, BadNetwork> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                IpNet::from_str(item)
                    .map(|net| net.trunc())
                    .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
                    .map_err(|_| BadNetwork(item.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether the list names no network.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl fmt::Display for AddressList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address is in the deny list.
    Denied,
    /// An allow list is set and the address is not in it.
    NotAllowed,
    /// The address is not in the admin allow list (admin endpoints only).
    NotAdmin,
}

impl Refusal {
    /// The label of the refusal in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "deny",
            Self::NotAllowed => "allow",
            Self::NotAdmin => "admin",
        }
    }
}

/// The address lists and the proxy rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// When not empty, only these networks may connect.
    pub allow: AddressList,
    /// These networks may never connect (deny wins over allow).
    pub deny: AddressList,
    /// When not empty, only these networks may use the admin endpoints.
    pub admin_allow: AddressList,
    /// Whether a reverse proxy in front reports client addresses in `X-Forwarded-For`.
    pub behind_proxy: bool,
    /// The proxies whose `X-Forwarded-For` is believed (only with `behind_proxy`).
    pub trusted_proxies: AddressList,
}

impl AccessRules {
    /// Whether `client` may connect at all: deny wins; an empty allow list allows all.
    pub fn admit(&self, client: IpAddr) -> Result<(), Refusal> {
        if self.deny.contains(client) {
            Err(Refusal::Denied)
        } else if !self.allow.is_empty() && !self.allow.contains(client) {
            Err(Refusal::NotAllowed)
        } else {
            Ok(())
        }
    }

    /// Whether `client` may use the admin endpoints (besides [`AccessRules::admit`]).
    pub fn admit_admin(&self, client: IpAddr) -> Result<(), Refusal> {
        if !self.admin_allow.is_empty() && !self.admin_allow.contains(client) {
            return Err(Refusal::NotAdmin);
        }
        Ok(())
    }

    /// Whether `peer` is a proxy whose `X-Forwarded-For` is believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.behind_proxy && self.trusted_proxies.contains(peer)
    }

    /// Checks a freshly accepted connection from `peer`, before anything is read.
    ///
    /// A trusted proxy passes: its requests are checked one by one, on the address of
    /// the client behind it.
    pub(crate) fn admit_peer(&self, peer: IpAddr) -> Result<(), Refusal> {
        if self.trusts(peer) {
            return Ok(());
        }
        self.admit(peer)
    }

    /// The client a request from `peer` comes from: `peer` itself, unless it is a trusted
    /// proxy; then the right-most address of `X-Forwarded-For` that is not a trusted
    /// proxy (the left-most when all are; the last trusted hop when the header is
    /// missing or an entry is not an address, as nothing beyond it can be believed).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Later headers carry later hops: walk every entry right to left.
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
        for entry in entries {
            let Some(ip) = parse_forwarded(entry) else {
                return client;
            };
            client = ip;
            if !self.trusted_proxies.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`[v6]:port`, `v4:port`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// Counts and logs a refusal by an address list: every refusal goes through here.
pub(crate) fn refused(app: &App, client: IpAddr, refusal: Refusal) {
    app.metrics.address_refused(refusal.as_str());
    info!(%client, list = refusal.as_str(), "connection refused by an address list");
    crate::audit::connection_refused(
        client,
        crate::audit::ConnectionLimit::AddressList(refusal.as_str()),
    );
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn list(s: &str) -> AddressList {
        AddressList::parse(s).expect("list")
    }

    #[test]
    fn lists_parse_networks_and_addresses_of_both_families() {
        let l = list(" 10.0.0.0/8, 192.168.1.5 ,2001:db8::/32,::1,");
        assert!(l.contains(ip("10.1.2.3")));
        assert!(l.contains(ip("192.168.1.5")));
        assert!(!l.contains(ip("192.168.1.6")));
        assert!(l.contains(ip("2001:db8::7")));
        assert!(l.contains(ip("::1")));
        assert!(!l.contains(ip("2001:db9::1")));
        assert!(!l.contains(ip("11.0.0.1")));
        assert!(list("").is_empty());
        assert_eq!(
            l.to_string(),
            "10.0.0.0/8,192.168.1.5/32,2001:db8::/32,::1/128"
        );
        // Host bits are dropped: the network is what counts.
        assert!(list("10.1.2.3/8").contains(ip("10.200.0.1")));
    }

    #[test]
    fn a_bad_entry_is_named() {
        assert_eq!(
            AddressList::parse("10.0.0.0/8, ten.0.0.0/8"),
            Err(BadNetwork("ten.0.0.0/8".into()))
        );
        assert!(AddressList::parse("10.0.0.0/33").is_err());
        assert!(AddressList::parse("::1/129").is_err());
    }

    #[test]
    fn mapped_ipv4_matches_ipv4_networks() {
        assert!(list("127.0.0.0/8").contains(ip("::ffff:127.0.0.2")));
    }

    #[test]
    fn deny_wins_and_an_empty_allow_list_allows_all() {
        let open = AccessRules::default();
        assert_eq!(open.admit(ip("203.0.113.9")), Ok(()));
        let rules = AccessRules {
            allow: list("10.0.0.0/8"),
            deny: list("10.9.0.0/16"),
            ..AccessRules::default()
        };
        assert_eq!(rules.admit(ip("10.1.0.1")), Ok(()));
        assert_eq!(rules.admit(ip("10.9.0.1")), Err(Refusal::Denied));
        assert_eq!(rules.admit(ip("11.0.0.1")), Err(Refusal::NotAllowed));
        let deny_only = AccessRules {
            deny: list("::1"),
            ..AccessRules::default()
        };
        assert_eq!(deny_only.admit(ip("::1")), Err(Refusal::Denied));
        assert_eq!(deny_only.admit(ip("::2")), Ok(()));
    }

    #[test]
    fn the_admin_list_applies_only_when_set() {
        let rules = AccessRules::default();
        assert_eq!(rules.admit_admin(ip("198.51.100.1")), Ok(()));
        let rules = AccessRules {
            admin_allow: list("127.0.0.1"),
            ..AccessRules::default()
        };
        assert_eq!(rules.admit_admin(ip("127.0.0.1")), Ok(()));
        assert_eq!(rules.admit_admin(ip("127.0.0.2")), Err(Refusal::NotAdmin));
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        headers
    }

    fn behind(trusted: &str) -> AccessRules {
        AccessRules {
            behind_proxy: true,
            trusted_proxies: list(trusted),
            ..AccessRules::default()
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_address() {
        let rules = behind("10.0.0.0/8");
        let proxy = ip("10.0.0.1");
        // The client may put anything on the left: only the hops from the right count.
        let h = forwarded(&["6.6.6.6, 203.0.113.7, 10.0.0.2"]);
        assert_eq!(rules.client_address(proxy, &h), ip("203.0.113.7"));
        let h = forwarded(&["6.6.6.6", "203.0.113.7:4711", "10.0.0.2"]);
        assert_eq!(rules.client_address(proxy, &h), ip("203.0.113.7"));
        let h = forwarded(&["[2001:db8::5]:443"]);
        assert_eq!(rules.client_address(proxy, &h), ip("2001:db8::5"));
        // All trusted: the left-most.
        let h = forwarded(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(rules.client_address(proxy, &h), ip("10.0.0.3"));
        // No header: the proxy itself.
        assert_eq!(rules.client_address(proxy, &HeaderMap::new()), proxy);
        // Garbage stops the walk at the last trusted hop.
        let h = forwarded(&["203.0.113.7, unknown, 10.0.0.2"]);
        assert_eq!(rules.client_address(proxy, &h), ip("10.0.0.2"));
        let h = forwarded(&["203.0.113.7, garbage"]);
        assert_eq!(rules.client_address(proxy, &h), proxy);
    }

    #[test]
    fn the_header_is_ignored_from_untrusted_peers_and_without_a_proxy() {
        let h = forwarded(&["203.0.113.7"]);
        let rules = behind("10.0.0.0/8");
        assert_eq!(rules.client_address(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        let off = AccessRules {
            behind_proxy: false,
            ..behind("10.0.0.0/8")
        };
        assert_eq!(off.client_address(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_proxy_passes_accept_and_others_are_checked() {
        let rules = AccessRules {
            allow: list("203.0.113.0/24"),
            ..behind("10.0.0.0/8")
        };
        assert_eq!(rules.admit_peer(ip("10.0.0.1")), Ok(()));
        assert_eq!(rules.admit_peer(ip("192.0.2.1")), Err(Refusal::NotAllowed));
    }
}
