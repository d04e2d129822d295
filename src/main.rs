//! Binary entry: parses Envoy-compatible flags, starts the shards and the agent thread.
mod cli;
mod default_config;
mod hot_restart;
mod logging;

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use cli::{Cli, Mode};
use model::stats::StatsRegistry;
use shardproxy::{access_log::Flusher, memory, shard};
use xds_agent::agent::{self, AgentOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (logs, log_writer) = match logging::init(&cli.log_level, cli.component_log_level.as_deref())
    {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let concurrency = cli.concurrency.unwrap_or(cores.len().max(1));
    let options = AgentOptions {
        config_path: cli.config_path.clone(),
        config_yaml: cli.config_yaml.clone(),
        default_bootstrap: default_config::BOOTSTRAP,
        allow_unknown_fields: cli.allow_unknown_static_fields,
        drain_time: Duration::from_secs(cli.drain_time_s),
        concurrency,
        service_node: cli.service_node.clone(),
        service_cluster: cli.service_cluster.clone(),
        admin_address_path: cli.admin_address_path.clone(),
        release_memory: memory::release_unused,
        trim_memory: memory::trim,
        heap_in_use: rt::memory::heap_in_use,
        admin_socket: hot_restart::admin_socket,
        on_live: rt::handover::release_parent,
        taken_over: Vec::new(),
    };
    match cli.mode {
        Mode::Validate => validate(&options),
        Mode::Serve => {
            let restart = hot_restart::Restart {
                base_id: cli.base_id,
                epoch: cli.restart_epoch,
                disabled: cli.disable_hot_restart,
            };
            let served = serve(options, &cores, logs, cli.io_backend, restart);
            drop(log_writer); // the lines logged so far come before the outcome
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `--mode validate`: OK, or every problem found, one per line.
fn validate(options: &AgentOptions) -> ExitCode {
    match agent::load_and_translate(options, &mut StatsRegistry::new(1)) {
        Ok(_) => {
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    mut options: AgentOptions,
    cores: &[core_affinity::CoreId],
    logs: Arc<logging::Levels>,
    io_backend: cli::IoBackend,
    restart: hot_restart::Restart,
) -> anyhow::Result<()> {
    if options.config_path.is_none() && options.config_yaml.is_none() {
        tracing::info!(
            "no -c/--config-yaml given: running the embedded default bootstrap (see README)"
        );
    }
    // Read and check the config before any ring or shard exists: a bad one is one message and
    // exit 1 with nothing started. The agent starts from this bootstrap (the file is read once).
    let (bootstrap, _) =
        agent::load_and_translate(&options, &mut StatsRegistry::new(options.concurrency))?;
    if !cores.is_empty() && options.concurrency > cores.len() {
        tracing::warn!(
            "--concurrency {}: more shards than the {} CPU(s) this process may run on; shards \
             will share CPUs",
            options.concurrency,
            cores.len()
        );
    }
    hot_restart::start(restart)?;
    options.taken_over = rt::handover::listener_addresses();
    if rt::poller::choose(io_backend.requested())? == rt::poller::Backend::IoUring {
        rt::limits::check_memlock(options.concurrency)?;
    }
    let (events_tx, events) = model::publish::event_channel();
    let (flusher, logs_handle) = Flusher::start()?;
    let (links, _threads) = shard::spawn_all(
        options.concurrency,
        cores,
        events_tx,
        options.drain_time,
        logs_handle,
    )?;
    tracing::info!(shards = links.len(), "shards started");
    // Shard threads are not joined: once the agent returns, they have exited or are abandoned.
    std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || {
            rt::priority::lower_current_thread(rt::priority::AGENT_NICE);
            agent::run(options, bootstrap, links, events, logs)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("agent thread panicked"))??;
    // The access-log lines queued so far are written before the process ends.
    flusher.finish(Duration::from_secs(1));
    Ok(())
}
