use clap::Parser;

/// mimalloc: cheaper small allocations and less fragmentation than glibc's malloc on the
/// request path (see BENCHMARKS.md, REST).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A released local model's ~100 MiB go back to the OS, not into mimalloc's free pages.
    agencyflow_functions::provider::on_model_release(|| {
        // SAFETY: mi_collect only walks and purges mimalloc's own heaps and segments.
        unsafe { libmimalloc_sys::mi_collect(true) }
    });
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
