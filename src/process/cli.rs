//! Command-line interface (argh): the same flags as Hipache's `hipache` binary.
//!
//! Parsing only; what the flags do is `main`'s job.

use std::path::PathBuf;

use argh::FromArgs;

/// hipache-tpc: a thread-per-core HTTP reverse proxy routed by Redis (or a routes file), compatible
/// with Hipache.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// configuration file (default: config/config.json, or config/config_<flavor>.json when
    /// SETTINGS_FLAVOR is set)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    /// load and validate the configuration (and the routes file of a file: driver), print the
    /// effective settings, and exit
    #[argh(switch, short = 'd')]
    pub dry: bool,

    /// write the PID to this file once ready (rewritten by a reload's successor); overrides
    /// server.pidFile
    #[argh(option)]
    pub pid_file: Option<PathBuf>,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}
