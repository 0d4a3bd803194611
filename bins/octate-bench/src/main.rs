//! `octate-bench`: a bounded load generator for Octate, and for `matchbox_server` as a
//! point of comparison, over real loopback sockets.
//!
//! The WebSocket side is `tokio-tungstenite`: nothing here shares code with the server's
//! transport. Every run is bounded in connections and in time (a watchdog ends the
//! process after `--max-runtime` seconds whatever happens), only ever dials addresses in
//! 127.0.0.0/8, prints a human summary on stderr and exactly one JSON line on stdout.
//!
//! Several nodes of a cluster (`octate-server` processes sharing rooms through Redis) are
//! measured with `--ws-b` (relay pairs and fanout rooms split across two nodes) or
//! `--ws-list` (peers spread round robin over any number of nodes); see [`nodes`].
//!
//! Scenarios (`--scenario`):
//! - `idle`: N authenticated peers in rooms of two, held; server RSS per connection and
//!   connect+auth rate. `--shards k` splits the peers over k child processes so each stays
//!   under the open-file limit.
//! - `relay`: P pairs ping-ponging an SDP-sized offer/answer, W in flight per pair.
//! - `churn`: connect, authenticate, send one signal, leave, as fast as C workers can.
//! - `fanout`: rooms of 8–32 peers passing presence/cursor updates around.
//! - `table`: reads JSON lines written by earlier runs and prints a Markdown comparison.

mod churn;
mod fanout;
mod idle;
mod net;
mod nodes;
mod proto;
mod relay;
mod stats;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use crate::nodes::Nodes;
use crate::proto::{Minter, Proto};

/// A boxed error: the generator reports failures, it does not recover from them.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Results of this crate.
pub(crate) type Res<T> = Result<T, BoxError>;

/// Which load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Many authenticated peers doing nothing.
    Idle,
    /// Pairs ping-ponging SDP offers and answers.
    Relay,
    /// Short sessions: connect, auth, one signal, leave.
    Churn,
    /// Rooms passing presence/cursor updates to every member.
    Fanout,
    /// Print a Markdown table from JSON result lines (`--input`).
    Table,
}

/// Which server speaks on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    /// Octate's protocol (`docs/protocol.md`).
    Octate,
    /// matchbox_server's JSON protocol (`IdAssigned`, `NewPeer`, `Signal`).
    Matchbox,
}

impl Target {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Octate => "octate",
            Self::Matchbox => "matchbox",
        }
    }
}

/// `i/k`: this process is shard `i` of `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardSpec {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl std::str::FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, k) = s.split_once('/').ok_or("expected i/k, e.g. 0/2")?;
        let index: usize = i.parse().map_err(|_| "bad shard index")?;
        let count: usize = k.parse().map_err(|_| "bad shard count")?;
        if count == 0 || index >= count {
            return Err("need 0 <= i < k".into());
        }
        Ok(Self { index, count })
    }
}

/// Command line of `octate-bench`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "octate-bench",
    version,
    about = "Bounded loopback load generator for Octate and matchbox_server"
)]
pub(crate) struct Args {
    /// What to run.
    #[arg(long, value_enum)]
    pub(crate) scenario: Scenario,
    /// Which protocol the server speaks.
    #[arg(long, value_enum, default_value = "octate")]
    pub(crate) target: Target,
    /// Octate's HTTP address, for tokens when no secret is given (loopback only).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub(crate) http: SocketAddr,
    /// WebSocket URL (loopback only); default ws://127.0.0.1:3001/ for Octate,
    /// ws://127.0.0.1:3536/ for matchbox (the room becomes the path).
    #[arg(long)]
    pub(crate) ws: Option<String>,
    /// A second node's WebSocket URL (loopback only). relay: the second peer of every
    /// pair (the responder) dials it, so every pair is split across two nodes; fanout:
    /// every other member of each room; idle: every other peer.
    #[arg(long, conflicts_with = "ws_list")]
    pub(crate) ws_b: Option<String>,
    /// The `--ws-b` node's HTTP address, for tokens when no secret is given (default: --http).
    #[arg(long, requires = "ws_b")]
    pub(crate) http_b: Option<SocketAddr>,
    /// Several nodes' WebSocket URLs, comma separated, instead of --ws: peers are spread
    /// over them round robin, and the two peers of a room are on different nodes
    /// (idle, relay, fanout).
    #[arg(long, value_delimiter = ',', conflicts_with = "ws")]
    pub(crate) ws_list: Vec<String>,
    /// The `--ws-list` nodes' HTTP addresses, comma separated, in the same order (tokens
    /// when no secret is given, heap from `/stats`).
    #[arg(long, value_delimiter = ',', requires = "ws_list")]
    pub(crate) http_list: Vec<SocketAddr>,
    /// The server's token secret: tokens are then signed locally with `octate-auth`
    /// before the run, as an app backend would. Without it they are fetched over HTTP.
    #[arg(long, env = "OCTATE_TOKEN_SECRET", hide_env_values = true)]
    pub(crate) token_secret: Option<String>,
    /// Key id the server signs with.
    #[arg(long, env = "OCTATE_TOKEN_KEY_ID", default_value = "k1")]
    pub(crate) token_key_id: String,
    /// Admin key for `POST /api/auth/token`, if the server has one.
    #[arg(long, env = "OCTATE_ADMIN_KEY", hide_env_values = true)]
    pub(crate) admin_key: Option<String>,
    /// Measured seconds (relay, churn, fanout).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Unmeasured seconds of load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// relay: pairs of peers.
    #[arg(long, default_value_t = 100)]
    pub(crate) pairs: usize,
    /// relay: messages in flight per pair; fanout: updates in flight per room.
    #[arg(long, default_value_t = 1)]
    pub(crate) window: usize,
    /// relay: size of the SDP text in each offer/answer, bytes (the whole message is ~100 more).
    #[arg(long, default_value_t = 1000)]
    pub(crate) payload: usize,
    /// idle: peers in all (rooms of two), over all shards.
    #[arg(long, default_value_t = 1000)]
    pub(crate) peers: usize,
    /// idle: seconds to hold every peer connected before measuring the server's RSS.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) hold: f64,
    /// idle: split the peers over this many child processes (each under the open-file limit).
    #[arg(long, default_value_t = 1)]
    pub(crate) shards: usize,
    /// idle, Octate: connect without sending `auth` (weighs the transport alone; raise
    /// the server's OCTATE_AUTH_TIMEOUT_MS above the hold time).
    #[arg(long)]
    pub(crate) no_auth: bool,
    /// Internal: this process is shard i of k (started by `--shards`).
    #[arg(long, hide = true)]
    pub(crate) shard: Option<ShardSpec>,
    /// idle: connections being opened at once; churn: concurrent workers.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// churn: upper bound on sessions (tokens are minted for this many before the run).
    #[arg(long, default_value_t = 150_000)]
    pub(crate) max_sessions: usize,
    /// fanout: rooms.
    #[arg(long, default_value_t = 32)]
    pub(crate) rooms: usize,
    /// fanout: peers per room (8–32 in the benchmark).
    #[arg(long, default_value_t = 16)]
    pub(crate) room_size: usize,
    /// The server's process id, to read its RSS and CPU time from /proc.
    #[arg(long, conflicts_with = "server_pids")]
    pub(crate) server_pid: Option<u32>,
    /// One process id per node, comma separated, in node order: RSS and CPU are then
    /// reported for each node and in total.
    #[arg(long, value_delimiter = ',')]
    pub(crate) server_pids: Vec<u32>,
    /// Client sockets are bound to 127.0.0.2 … 127.0.0.(1+n), round robin, so the
    /// ephemeral port range is per source address.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub(crate) source_addrs: u8,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Free text stored in the JSON line (e.g. "pinned" or "2-core").
    #[arg(long, default_value = "")]
    pub(crate) label: String,
    /// Prefix of user and room ids (default: derived from the clock), so runs never collide.
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// table: JSON-lines files to read.
    #[arg(long)]
    pub(crate) input: Vec<PathBuf>,
    /// Hard bound: the process exits with code 3 after this many seconds, whatever happens.
    #[arg(long, default_value_t = 300.0)]
    pub(crate) max_runtime: f64,
}

/// Everything a scenario needs.
pub(crate) struct Ctx {
    pub(crate) args: Args,
    /// The nodes peers connect to (one unless `--ws-b` or `--ws-list`).
    pub(crate) nodes: Arc<Nodes>,
    pub(crate) proto: Arc<Proto>,
    pub(crate) tag: String,
}

impl Ctx {
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.args.duration)
    }

    pub(crate) fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.args.warmup)
    }

    /// The server processes to read CPU time and RSS from: one per node with
    /// `--server-pids`, else the one `--server-pid` (if any).
    pub(crate) fn server_pids(&self) -> Vec<u32> {
        if self.args.server_pids.is_empty() {
            self.args.server_pid.into_iter().collect()
        } else {
            self.args.server_pids.clone()
        }
    }

    /// The JSON line every scenario prints: what ran, with which parameters, and its metrics.
    pub(crate) fn result_line(&self, params: Value, metrics: Value) -> Value {
        let (ws, ws_b, ws_nodes) = self.nodes.describe();
        json!({
            "scenario": format!("{:?}", self.args.scenario).to_lowercase(),
            "target": self.args.target.as_str(),
            "label": self.args.label,
            // Where the peers connected: same-node and cross-node runs stay apart.
            "ws": ws,
            "ws_b": ws_b,
            "ws_nodes": ws_nodes,
            "threads": runtime_threads(&self.args),
            // Other work on the machine skews every number: keep the load average with them.
            "loadavg": std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().and_then(|x| x.parse::<f64>().ok())),
            "params": params,
            "metrics": metrics,
        })
    }
}

fn runtime_threads(args: &Args) -> usize {
    args.threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .max(1)
}

fn main() -> ExitCode {
    let args = Args::parse();
    start_watchdog(args.max_runtime);
    if args.scenario == Scenario::Table {
        return match table::run(&args.input) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("octate-bench: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let threads = runtime_threads(&args);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("octate-bench: runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("octate-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Ends the process after `secs`, whatever it is doing: every run stops by itself.
fn start_watchdog(secs: f64) {
    let limit = Duration::from_secs_f64(secs.max(1.0));
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("octate-bench: watchdog: still running after {limit:?}, exiting");
        std::process::exit(3);
    });
}

async fn run(args: Args) -> Res<Value> {
    let default_ws = match args.target {
        Target::Octate => "ws://127.0.0.1:3001/",
        Target::Matchbox => "ws://127.0.0.1:3536/",
    };
    let nodes = Arc::new(Nodes::from_args(&args, default_ws)?);
    let tag = args.tag.clone().unwrap_or_else(default_tag);
    let proto = match args.target {
        Target::Octate => Proto::Octate(Box::new(Minter::new(
            args.token_secret.as_deref(),
            &args.token_key_id,
            args.http,
            args.admin_key.clone(),
        )?)),
        Target::Matchbox => Proto::Matchbox,
    };
    let ctx = Ctx {
        args,
        nodes,
        proto: Arc::new(proto),
        tag,
    };
    let started = Instant::now();
    let line = match ctx.args.scenario {
        Scenario::Idle => idle::run(&ctx).await?,
        Scenario::Relay => relay::run(&ctx).await?,
        Scenario::Churn => churn::run(&ctx).await?,
        Scenario::Fanout => fanout::run(&ctx).await?,
        Scenario::Table => return Err("table is handled before the runtime starts".into()),
    };
    eprintln!(
        "octate-bench: {} against {} done in {:.1} s",
        format!("{:?}", ctx.args.scenario).to_lowercase(),
        ctx.args.target.as_str(),
        started.elapsed().as_secs_f64()
    );
    Ok(line)
}

/// A short id prefix from the clock, so two runs against one server never share rooms.
fn default_tag() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("b{}", ms % 100_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Dialer;

    #[test]
    fn shard_specs_parse() {
        assert_eq!("1/3".parse(), Ok(ShardSpec { index: 1, count: 3 }));
        assert!("3/3".parse::<ShardSpec>().is_err());
        assert!("0/0".parse::<ShardSpec>().is_err());
        assert!("x".parse::<ShardSpec>().is_err());
    }

    #[test]
    fn only_loopback_is_dialed() {
        assert!(net::require_loopback("127.0.0.5".parse().expect("ip")).is_ok());
        assert!(net::require_loopback("::1".parse().expect("ip")).is_ok());
        assert!(net::require_loopback("10.0.0.1".parse().expect("ip")).is_err());
        assert!(Dialer::new("ws://192.168.1.2:3001/", 4).is_err());
        assert!(Dialer::new("ws://127.0.0.1:3001/", 4).is_ok());
    }
}
