//! `hipache-tpc` binary: parse the command line, load the configuration, and run (or just validate).
//!
//! Fatal errors are printed to stderr with the file and key at fault (or, for a routes file, the line and
//! column), and the exit status is 1.

use hipache_tpc::config::{self, Config, DriverConfig};
use hipache_tpc::drivers::file::RouteTable;
use hipache_tpc::process::cli::Args;
use hipache_tpc::process::handover::{self, ReadyPipe};
use hipache_tpc::process::startup::{self, Startup};
use log::warn;

/// Prints `message`, tells the predecessor (on a reload) why this process will not take over, exits 1.
fn fatal(ready_pipe: Option<ReadyPipe>, message: &str) -> ! {
    eprintln!("hipache-tpc: {message}");
    if let Some(pipe) = ready_pipe {
        pipe.failed(message);
    }
    std::process::exit(1);
}

/// Prints a line on stdout without `println!`'s panic when the reader went away
/// (`hipache-tpc --dry | head -1`): a closed pipe (EPIPE; SIGPIPE is ignored by the Rust runtime)
/// just ends the output, any other write error is reported (exit 1).
fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("hipache-tpc: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// `pub` so that the test build (`examples/fault_injection.rs`) can run the same program.
pub fn main() {
    // Before any thread starts: sockets and the readiness pipe handed over by a predecessor (reload).
    let (inherited, ready_pipe) = match handover::take_from_env() {
        Ok(taken) => taken,
        Err(e) => fatal(
            None,
            &format!("cannot adopt the sockets of the previous process: {e}"),
        ),
    };
    let exe = handover::own_executable();
    let raw_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let args: Args = argh::from_env();
    if args.version {
        print_stdout(concat!("hipache-tpc ", env!("CARGO_PKG_VERSION")));
        return;
    }
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rustls=error"),
    )
    .format_timestamp_millis()
    .init();
    let path = args.config.unwrap_or_else(config::default_path);
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            // The unknown keys too: a typo is often what caused the error.
            for w in &e.warnings {
                warn!("{}: {w}", path.display());
            }
            fatal(ready_pipe, &format!("configuration error: {e}"))
        }
    };
    for w in &config.warnings {
        warn!("{}: {w}", path.display());
    }
    if let Some(pid_file) = &args.pid_file {
        // Absolute, so that a reload's successor (same arguments) writes the same file.
        config.server.pid_file = Some(std::path::absolute(pid_file).unwrap_or(pid_file.clone()));
    }
    if args.dry {
        // What a start checks before binding, in the same words: account, access log, pid file.
        match hipache_tpc::process::preflight::check(&config) {
            Ok(checked) => {
                for w in &checked.warnings {
                    warn!("{w}");
                }
            }
            Err(e) => {
                eprintln!("hipache-tpc: {e}");
                std::process::exit(1);
            }
        }
        // Certificates and keys are read and checked too.
        if let Err(e) = hipache_tpc::tls::load_all(&config) {
            eprintln!("hipache-tpc: {e}");
            std::process::exit(1);
        }
        // So is the routes file.
        if let DriverConfig::File { path } = &config.driver {
            match RouteTable::load(path) {
                Ok(table) => {
                    for w in table.warnings() {
                        warn!("routes file {}: {w}", path.display());
                    }
                    eprintln!(
                        "hipache-tpc: routes file {} is valid: {} frontends",
                        path.display(),
                        table.len()
                    );
                }
                Err(e) => {
                    eprintln!("hipache-tpc: {e}");
                    std::process::exit(1);
                }
            }
        }
        // And the listening addresses (a port held by another program stops a start).
        match hipache_tpc::process::preflight::ports(&config) {
            Ok(notes) => {
                for n in notes {
                    log::info!("{n}");
                }
            }
            Err(e) => {
                eprintln!("hipache-tpc: {e}");
                std::process::exit(1);
            }
        }
        match serde_json::to_string_pretty(&config.to_effective_json()) {
            Ok(text) => print_stdout(&text),
            Err(e) => {
                eprintln!("hipache-tpc: cannot print the configuration: {e}");
                std::process::exit(1);
            }
        }
        eprintln!("hipache-tpc: configuration {} is valid", path.display());
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        log::error!(
            "thread {} panicked: {info}",
            thread.name().unwrap_or("unnamed")
        );
    }));
    let startup = Startup {
        inherited,
        ready_pipe,
        ..Startup::cold(exe, raw_args)
    };
    if let Err(e) = startup::run(config, startup) {
        eprintln!("hipache-tpc: {e}");
        std::process::exit(1);
    }
}
