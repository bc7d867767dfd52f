use clap::Parser;

/// mimalloc: cheaper small allocations and less fragmentation than glibc's malloc on the
/// request path (see BENCHMARKS.md, REST).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = match agencyflow_server::config::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    agencyflow_server::run::init_logging(cli.global.log_format);
    if let Err(e) = agencyflow_server::run::run(cli) {
        eprintln!("agencyflow: {e}");
        std::process::exit(e.exit_code());
    }
}
