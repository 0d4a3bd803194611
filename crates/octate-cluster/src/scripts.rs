//! The Lua scripts that change shared state atomically; each is the shared prelude plus
//! one body from `src/lua/`.

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// Every script this crate runs.
pub(crate) struct Scripts {
    pub(crate) join: Script,
    pub(crate) leave: Script,
    pub(crate) close_room: Script,
    pub(crate) create_room: Script,
    pub(crate) read_room: Script,
    pub(crate) heartbeat: Script,
    pub(crate) claim_dead: Script,
    pub(crate) retire: Script,
    pub(crate) reap_batch: Script,
    pub(crate) restore: Script,
    pub(crate) ticket: Script,
    pub(crate) token: Script,
    pub(crate) suspend: Script,
    pub(crate) resume: Script,
    pub(crate) expire: Script,
    pub(crate) kick: Script,
    pub(crate) list_rooms: Script,
    pub(crate) activity: Script,
}

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            join: with_prelude(include_str!("lua/join.lua")),
            leave: with_prelude(include_str!("lua/leave.lua")),
            close_room: with_prelude(include_str!("lua/close_room.lua")),
            create_room: with_prelude(include_str!("lua/create_room.lua")),
            read_room: with_prelude(include_str!("lua/read_room.lua")),
            heartbeat: with_prelude(include_str!("lua/heartbeat.lua")),
            claim_dead: with_prelude(include_str!("lua/claim_dead.lua")),
            retire: with_prelude(include_str!("lua/retire.lua")),
            reap_batch: with_prelude(include_str!("lua/reap_batch.lua")),
            restore: with_prelude(include_str!("lua/restore.lua")),
            ticket: with_prelude(include_str!("lua/ticket.lua")),
            token: with_prelude(include_str!("lua/token.lua")),
            suspend: with_prelude(include_str!("lua/suspend.lua")),
            resume: with_prelude(include_str!("lua/resume.lua")),
            expire: with_prelude(include_str!("lua/expire.lua")),
            kick: with_prelude(include_str!("lua/kick.lua")),
            list_rooms: with_prelude(include_str!("lua/list_rooms.lua")),
            activity: with_prelude(include_str!("lua/activity.lua")),
        }
    }

    /// Every script, to load into Redis' script cache after connecting.
    pub(crate) fn all(&self) -> [&Script; 18] {
        [
            &self.join,
            &self.leave,
            &self.close_room,
            &self.create_room,
            &self.read_room,
            &self.heartbeat,
            &self.claim_dead,
            &self.retire,
            &self.reap_batch,
            &self.restore,
            &self.ticket,
            &self.token,
            &self.suspend,
            &self.resume,
            &self.expire,
            &self.kick,
            &self.list_rooms,
            &self.activity,
        ]
    }
}
