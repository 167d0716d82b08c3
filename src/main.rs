//! `hipache-tpc` binary: parse the command line, load the configuration, and run (or just validate).
//!
//! Fatal errors are printed to stderr with the file and key at fault (or, for a routes file, the line and
//! column), and the exit status is 1.

use hipache_tpc::cli::Args;
use hipache_tpc::config::{self, Config, DriverConfig};
use hipache_tpc::file_routes::RouteTable;
use hipache_tpc::server;
use log::warn;

fn main() {
    let args: Args = argh::from_env();
    if args.version {
        println!("hipache-tpc {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let path = args.config.unwrap_or_else(config::default_path);
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hipache-tpc: configuration error: {e}");
            std::process::exit(1);
        }
    };
    for w in &config.warnings {
        warn!("{}: {w}", path.display());
    }
    if args.dry {
        // Certificates and keys are read and checked too.
        if let Err(e) = hipache_tpc::tls::load_all(&config) {
            eprintln!("hipache-tpc: configuration error: {e}");
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
        match serde_json::to_string_pretty(&config.to_effective_json()) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("hipache-tpc: cannot print the configuration: {e}");
                std::process::exit(1);
            }
        }
        eprintln!("hipache-tpc: configuration {} is valid", path.display());
        return;
    }
    if let Err(e) = server::run(config) {
        eprintln!("hipache-tpc: {e}");
        std::process::exit(1);
    }
}
