//! The `cellc` command line: parses flags, calls the library, renders diagnostics.

// A program: it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;

use cellc::{diag, Error};

mod args;
mod commands;

use args::*;

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Check(args) => commands::check(args),
        Command::Run(args) => commands::run(args),
        Command::Calibrate(args) => commands::calibrate(args),
        Command::Bench(args) => commands::bench(args),
        Command::Compile(args) => commands::compile(args),
    }
}

fn report(e: &Error) {
    match e {
        Error::Source {
            source,
            diagnostics,
        } => {
            let (located, unlocated): (Vec<_>, Vec<_>) = diagnostics
                .iter()
                .cloned()
                .partition(|d| !d.labels.is_empty());
            diag::emit_stderr(source, &located);
            eprint!("{}", diag::render_without_source(&unlocated));
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            if errors > 0 {
                eprintln!(
                    "error: {} failed with {errors} error{}",
                    source.name,
                    if errors == 1 { "" } else { "s" }
                );
            }
        }
        other => eprint!("{}", other.render()),
    }
}

fn main() -> ExitCode {
    // A write beyond the file size limit (`ulimit -f`) then fails with EFBIG,
    // which is reported, instead of killing the process mid-write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" installs no handler;
    // it is done before any other thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // A reader that stops reading (`cellc compile --emit asm | head`) ends
    // cellc quietly, as it ends `cat`, rather than a write to a closed pipe
    // failing in the middle of a dump (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition installs no handler;
    // it is done before any other thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // A deep stack for the front end's recursion, whatever the input.
    let worker = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || run(cli));
    let result = match worker {
        Ok(handle) => match handle.join() {
            Ok(r) => r,
            Err(_) => Err(Error::internal("the compiler panicked")),
        },
        Err(e) => Err(Error::too_large(format!(
            "cannot start the compiler thread: {e}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
