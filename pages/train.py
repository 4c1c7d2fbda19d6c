"""Train: start a background training run (or a fine-tune), follow it live, manage runs.

The form's defaults, help texts and choices are TrainConfig's own, read from its dataclass
fields and their metadata.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from dvbpr import jobs
from dvbpr.config import PRESETS, TrainConfig, resume_config
from dvbpr.errors import DeviceUnavailableError, DVBPRError
from dvbpr.features import resolve_device
from dvbpr.fsutil import safe_name
from dvbpr.rundir import LAST, read_status
from ui import errors, figures, loaders, paths, public, shell, state, style

STATE_BADGES = {
    "running": "green",
    "starting": "blue",
    "finished": "violet",
    "stopped": "orange",
    "failed": "red",
    "interrupted": "orange",
    "new": "gray",
}
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
NEW_RUN = {  # TrainConfig field: (widget key on the New run form, type of its value)
    "arch": ("tr_arch", str),
    "image_size": ("tr_size", int),
    "terms": ("tr_terms", str),
    "epochs": ("tr_epochs", int),
    "batch_size": ("tr_batch", int),
    "lr": ("tr_lr", float),
    "dim": ("tr_dim", int),
    "cf_dim": ("tr_cfdim", int),
    "seed": ("tr_seed", int),
    "device": ("tr_device", str),
    "max_minutes": ("tr_max", float),
    # advanced options
    "negatives": ("tr_negatives", str),
    "in_batch": ("tr_in_batch", bool),
    "colour_stream": ("tr_colour_stream", bool),
    "texture": ("tr_texture", bool),
    "crop_agreement": ("tr_crop_agreement", float),
    "augment": ("tr_augment", bool),
    "norm": ("tr_norm", str),
    "theta_init": ("tr_theta_init", str),
    "dropout": ("tr_dropout", float),
    "lr_schedule": ("tr_lr_schedule", str),
    "l2_cnn": ("tr_l2_cnn", float),
    "l2_theta": ("tr_l2_theta", float),
    "l2_cf": ("tr_l2_cf", float),
    "select": ("tr_select", str),
    "patience": ("tr_patience", int),
}
FINETUNE = {"epochs": 3, "lr": 1e-4}  # a fine-tune's own defaults: a few epochs, a smaller step
PRESET = "paper"
PRESET_KEY = "tr_preset"


def _default(field: str):
    return FIELDS[field].default


def _help(field: str) -> str:
    """The field's help text, from TrainConfig's metadata (as `dvbpr train --help`, less the default)."""
    return FIELDS[field].metadata["help"]


def _choices(field: str) -> tuple[str, ...]:
    """The values a field takes, from TrainConfig's metadata (as `dvbpr train` accepts)."""
    return FIELDS[field].metadata["choices"]


def _set_new_run_values(values: dict, only_missing: bool = False) -> None:
    """Put TrainConfig `values` into the New run form's widgets (through their session state)."""
    ss = st.session_state
    for field, (key, kind) in NEW_RUN.items():
        if field in values and not (only_missing and key in ss):
            ss[key] = kind(values[field])


def _toggle_preset() -> None:
    """The preset switch: its values into the form, or the defaults back."""
    preset = PRESETS[PRESET]
    _set_new_run_values(preset if st.session_state[PRESET_KEY] else {f: _default(f) for f in preset})


@st.cache_resource(show_spinner=False)
def _detected_device() -> tuple[bool, str]:
    if torch.cuda.is_available():
        try:
            return True, torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - a name is only informative
            return True, "CUDA GPU"
    return False, ""


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


# ----------------------------------------------------------------------------- starting
def _start(cfg_kwargs: dict, name: str) -> None:
    """Validate and launch; every refusal is a message, never an exception."""
    public.refuse("Starting a training run")
    try:
        safe_name(name.strip(), "run name")
        run_dir = paths.models_root() / name.strip()
        data = cfg_kwargs.get("data", "")
        if not (Path(data) / "interactions.csv").is_file():
            raise DVBPRError(
                f"no dataset at {paths.display(Path(data))}: pick one of the folders under "
                f"{paths.display(paths.data_root())}/"
            )
        cfg = TrainConfig(out=str(run_dir), **cfg_kwargs)
        cfg.validate()
        resolve_device(cfg.device)  # CUDA requested without a GPU
        pid = jobs.start_training(cfg)
    except DVBPRError as exc:
        errors.show_problem(
            f"Cannot start the run: {exc}", errors.DEVICE_HINT if isinstance(exc, DeviceUnavailableError) else ""
        )
        return
    st.session_state["train_follow"] = run_dir.name
    st.success(
        f"Started **{run_dir.name}** (process {pid}). It keeps running if you close the tab.",
        icon=":material/rocket_launch:",
    )


def _device_select(key: str) -> str:
    has_cuda, gpu = _detected_device()
    device = st.selectbox("Device", ["auto", "cpu", "cuda"], key=key, help=_help("device"))
    st.caption(
        f"Detected: **{gpu}** (CUDA available)"
        if has_cuda
        else "Detected: no CUDA GPU (torch.cuda.is_available() is False) - training runs on the CPU"
    )
    return device


def _new_run_form(datasets: list[str]) -> None:
    _set_new_run_values({f: _default(f) for f in NEW_RUN}, only_missing=True)
    preset = PRESETS[PRESET]
    st.toggle(
        "Paper preset",
        key=PRESET_KEY,
        on_change=_toggle_preset,
        help="The original code's settings: "
        + ", ".join(f"{k} {v}" for k, v in preset.items())
        + ". Switching it sets those fields below (advanced options included); off restores the defaults.",
    )
    with st.form("new_run", border=False):
        c1, c2 = st.columns(2)
        data = c1.selectbox(
            "Dataset",
            datasets,
            key="tr_data",
            index=datasets.index(state.active_data()) if state.active_data() in datasets else 0,
        )
        st.session_state.setdefault("tr_name", time.strftime("run-%Y%m%d-%H%M"))
        name = c2.text_input(
            "Run name",
            key="tr_name",
            help=f"Folder name under {paths.display(paths.models_root())}/: letters, digits, '.', '_' or '-'",
        )
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Architecture", _choices("arch"), key="tr_arch", help=_help("arch"))
        c2.number_input(
            "Image size (px)",
            0,
            512,
            step=16,
            key="tr_size",
            help=_help("image_size"),
        )
        c3.selectbox("Score terms", _choices("terms"), key="tr_terms", help=_help("terms"))
        c1, c2, c3 = st.columns(3)
        c1.number_input("Epochs", 1, 1000, key="tr_epochs", help=_help("epochs"))
        c2.number_input("Batch size", 2, 8192, step=32, key="tr_batch", help=_help("batch_size"))
        c3.number_input("Learning rate", 1e-6, 1.0, step=1e-4, format="%g", key="tr_lr", help=_help("lr"))
        c1, c2, c3 = st.columns(3)
        c1.number_input("Visual dimension K", 1, 1024, key="tr_dim", help=_help("dim"))
        c2.number_input("CF dimension", 1, 1024, key="tr_cfdim", help=_help("cf_dim"))
        c3.number_input("Seed", 0, 2**31 - 1, key="tr_seed", help=_help("seed"))
        c1, c2 = st.columns(2)
        with c1:
            _device_select("tr_device")
        c2.number_input(
            "Time limit (minutes, 0 = none)",
            0.0,
            10000.0,
            key="tr_max",
            help=_help("max_minutes"),
        )
        with st.expander("Advanced options"):
            _advanced_options()
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if submitted:
        ss = st.session_state
        values = {field: kind(ss[key]) for field, (key, kind) in NEW_RUN.items()}
        if ss.get(PRESET_KEY):  # preset fields the form does not show
            values = {**{f: v for f, v in PRESETS[PRESET].items() if f not in NEW_RUN}, **values}
        _start(dict(data=str(paths.data_root() / data), **values), name)


def _advanced_options() -> None:
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Negatives", _choices("negatives"), key="tr_negatives", help=_help("negatives"))
    c2.selectbox("Normalisation", _choices("norm"), key="tr_norm", help=_help("norm"))
    c3.selectbox("θ initialisation", _choices("theta_init"), key="tr_theta_init", help=_help("theta_init"))
    c1, c2, c3 = st.columns(3)
    c1.number_input(
        "Dropout",
        0.0,
        0.95,
        step=0.05,
        format="%g",
        key="tr_dropout",
        help=_help("dropout"),
    )
    c2.selectbox("LR schedule", _choices("lr_schedule"), key="tr_lr_schedule", help=_help("lr_schedule"))
    c3.number_input("Patience", 0, 1000, key="tr_patience", help=_help("patience"))
    c1.selectbox("best.pt keeps", _choices("select"), key="tr_select", help=_help("select"))
    c1, c2, c3 = st.columns(3)
    c1.number_input("L2 on CNN weights", 0.0, 100.0, step=1e-4, format="%g", key="tr_l2_cnn", help=_help("l2_cnn"))
    c2.number_input("L2 on θ rows", 0.0, 100.0, step=0.1, format="%g", key="tr_l2_theta", help=_help("l2_theta"))
    c3.number_input("L2 on γ and β rows", 0.0, 100.0, step=1e-4, format="%g", key="tr_l2_cf", help=_help("l2_cf"))
    c1, c2, c3 = st.columns(3)
    c1.checkbox("In-batch negatives", key="tr_in_batch", help=_help("in_batch"))
    c2.checkbox("Colour stream", key="tr_colour_stream", help=_help("colour_stream"))
    c3.checkbox("Texture head", key="tr_texture", help=_help("texture"))
    c1.checkbox("Augment images", key="tr_augment", help=_help("augment"))
    c2.number_input(
        "Crop agreement", 0.0, 100.0, step=1.0, format="%g", key="tr_crop_agreement", help=_help("crop_agreement")
    )


def _finetune_form(datasets: list[str], models: list[str]) -> None:
    if not models:
        st.info("No trained model yet: start a new run first.")
        return
    with st.form("finetune", border=False):
        c1, c2 = st.columns(2)
        source = c1.selectbox(
            "Start from run",
            models,
            key="ft_source",
            index=models.index(state.active_model()) if state.active_model() in models else 0,
        )
        data = c2.selectbox(
            "Dataset",
            datasets,
            key="ft_data",
            index=datasets.index(state.active_data()) if state.active_data() in datasets else 0,
            help="Users and items are matched by id; new ones start fresh",
        )
        c1, c2, c3 = st.columns(3)
        st.session_state.setdefault("ft_name", time.strftime("finetune-%Y%m%d-%H%M"))
        name = c1.text_input("Run name", key="ft_name")
        epochs = c2.number_input("Epochs", 1, 1000, FINETUNE["epochs"], key="ft_epochs", help=_help("epochs"))
        lr = c3.number_input(
            "Learning rate", 1e-6, 1.0, FINETUNE["lr"], step=1e-5, format="%g", key="ft_lr", help=_help("lr")
        )
        c1, c2 = st.columns(2)
        batch = c1.number_input(
            "Batch size", 2, 8192, int(_default("batch_size")), step=32, key="ft_batch", help=_help("batch_size")
        )
        with c2:
            device = _device_select("ft_device")
        freeze = st.checkbox(
            "Freeze the CNN (train only the user and item embeddings)",
            key="ft_freeze",
            value=bool(_default("freeze_cnn")),
            help=_help("freeze_cnn"),
        )
        submitted = st.form_submit_button("Start fine-tuning", type="primary", icon=":material/play_arrow:")
    if submitted:
        _start(
            dict(
                data=str(paths.data_root() / data),
                init_from=str(paths.models_root() / source),
                freeze_cnn=bool(freeze),
                epochs=int(epochs),
                lr=float(lr),
                batch_size=int(batch),
                device=device,
            ),
            name,
        )


# ------------------------------------------------------------------------------ following
def _live(run_name: str) -> None:
    with errors.guard():
        _live_body(run_name)


def _live_body(run_name: str) -> None:
    run = paths.models_root() / run_name
    status = read_status(run)
    run_st = jobs.run_state(run)
    previous = st.session_state.get("_live_prev")
    st.session_state["_live_prev"] = (run_name, run_st)
    if (
        previous
        and previous[0] == run_name
        and previous[1] in ("running", "starting")
        and run_st not in ("running", "starting")
    ):
        st.rerun()  # the job ended: refresh the whole page (runs table, sidebar)

    step, total = int(status.get("step") or 0), int(status.get("total_steps") or 0)
    message = str(status.get("message") or "").replace("resume with --resume", "resume it below")
    st.markdown(
        f"**{run_name}** :{STATE_BADGES.get(run_st, 'gray')}-badge[{run_st}]"
        + (f" {message}" if message and run_st != "failed" else "")
    )
    if total:
        st.progress(min(step / total, 1.0), text=f"step {step:,} of {total:,}")
    elif run_st in ("running", "starting"):
        st.progress(0.0, text=status.get("message") or "starting")
    if status.get("note"):  # e.g. colour is no taste of the data (dvbpr.diagnostics.colour_note)
        st.info(str(status["note"]))
    m = st.columns(3) + st.columns(3)  # two rows: five in one row are cut in a 1400 px window
    m[0].metric("Epoch", f"{status.get('epoch', 0)}/{status.get('epochs', '-')}")
    loss = status.get("loss")
    m[1].metric("Loss", f"{loss:.4f}" if isinstance(loss, (int, float)) else "-")
    best = status.get("best_val_auc")
    m[2].metric("Best val AUC", f"{best:.4f}" if isinstance(best, (int, float)) else "-")
    rate = status.get("triplets_per_s")
    m[3].metric("Triplets/s", f"{rate:,.0f}" if isinstance(rate, (int, float)) else "-")
    m[4].metric("ETA", _fmt_seconds(status.get("eta_s")) if run_st == "running" else "-")

    if run_st == "failed":
        errors.show_problem(
            f"The run failed: {message or 'no message'}",
            "The end of its log is below. Fix the cause and resume it, or start a new run.",
            public_hint="Its log stays on the server, for whoever runs it.",
        )
        if not public.public_mode():  # the log holds the server's paths and command lines
            st.code(jobs.job_log(run, 30) or "(no log)", language=None)
    elif run_st == "interrupted":  # killed: its status still says running, but no process holds the run
        if public.public_mode():  # resuming and starting runs are turned off there
            what_now = "."
        elif (run / LAST).is_file():
            what_now = ": resume it below from its last checkpoint."
        else:
            what_now = ": it had saved no checkpoint yet, so start a new run."
        st.warning(
            "The job's process is gone (killed, out of memory or the machine restarted) while it was running"
            + what_now,
            icon=":material/warning:",
        )

    # the charts change only when metrics.jsonl does: drawn once per version of it
    key = (str(run), paths.metrics_stamp(run), int(status.get("epochs") or 1))
    loss_fig, auc_fig = figures.cached_figure("tr_curves", key, lambda: _curves(run, key[2]))
    c1, c2 = st.columns(2)
    with c1:
        if loss_fig is not None:
            figures.chart(loss_fig)
        else:
            st.caption("The loss curve appears after the first logged steps.")
    with c2:
        if auc_fig is not None:
            figures.chart(auc_fig)
        else:
            st.caption("The validation AUC curve appears after the first epoch.")

    b1, b2, b3, _ = st.columns([1.3, 1.2, 1.4, 2], vertical_alignment="bottom")
    if public.public_mode():
        public.note("Stopping and resuming runs")
    elif run_st in ("running", "starting"):
        if b1.button("Stop", icon=":material/stop:", key="tr_stop"):
            public.refuse("Stopping a run")
            try:
                asked = jobs.stop_training(run)
            except DVBPRError as exc:
                errors.show_problem(str(exc))
            else:
                st.toast(
                    "Stop requested: the job finishes its step and saves a checkpoint."
                    if asked
                    else "The job was no longer running."
                )
    elif (run / LAST).is_file():
        saved = int(status.get("epochs") or 1)
        more = b1.number_input("Epochs in total", 1, 10000, saved + (run_st == "finished"), key="tr_resume_epochs")
        if b2.button("Resume" if run_st != "finished" else "Continue", icon=":material/play_arrow:", key="tr_resume"):
            public.refuse("Resuming a run")
            try:
                cfg = resume_config(run, epochs=int(more))
                resolve_device(cfg.device)
                pid = jobs.start_training(cfg, resume=True)
            except DVBPRError as exc:
                errors.show_problem(f"Cannot resume: {exc}")
            else:
                st.toast(f"Resumed {run_name} (process {pid})")
                st.session_state["_live_prev"] = (run_name, "starting")
                st.rerun()
    if run_st in ("finished", "stopped") and paths.has_checkpoint(run) and run_name != state.active_model():
        if b3.button("Use this model", icon=":material/check:", key="tr_use_live"):
            state.set_model(run_name)
            st.rerun()


def _curves(run: Path, epochs_planned: int) -> tuple[go.Figure | None, go.Figure | None]:
    """The training loss per logged step and the validation AUC per epoch (None: no points yet)."""
    records = loaders.metrics(str(run))
    steps = [r for r in records if r.get("type") == "step" and "loss" in r]
    aucs = [r for r in records if r.get("type") == "epoch" and isinstance(r.get("val_auc"), (int, float))]
    loss_fig = auc_fig = None
    if steps:
        loss_fig = _chart(
            go.Figure(
                go.Scatter(
                    x=[r["step"] for r in steps],
                    y=[r["loss"] for r in steps],
                    mode="lines+markers",
                    line=dict(color="#5b4bdb"),
                    name="loss",
                )
            ),
            "Training loss (BPR)",
            "step",
        )
    if aucs:
        values = [r["val_auc"] for r in aucs]
        auc_fig = go.Figure(
            go.Scatter(
                x=[r["epoch"] for r in aucs], y=values, mode="lines+markers", line=dict(color="#e8590c"), name="val AUC"
            )
        )
        auc_fig.update_yaxes(range=[min(values + [0.5]) - 0.02, min(1.0, max(values) + 0.05)])
        auc_fig.update_xaxes(dtick=1, range=[0.5, max(epochs_planned, len(values)) + 0.5])
        auc_fig = _chart(auc_fig, "Validation AUC", "epoch")
    return loss_fig, auc_fig


def _chart(fig: go.Figure, title: str, xlabel: str) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)),
        height=260,
        margin=dict(l=4, r=4, t=36, b=4),
        xaxis_title=xlabel,
        plot_bgcolor=figures.PLOT_BG,
        showlegend=False,
    )
    return fig


# ---------------------------------------------------------------------------------- runs
def _runs_table(runs: list) -> None:
    if not runs:
        st.caption(f"No runs under {paths.display(paths.models_root())}/ yet.")
        return
    frame = pd.DataFrame(
        [
            {
                "run": r.name,
                "state": r.state,
                "dataset": Path(r.data).name if r.data else "",
                "architecture": r.arch,
                "epoch": f"{r.epoch}/{r.epochs}" if r.epochs else "",
                "best val AUC": r.best_val_auc,
                "updated": paths.age(r.updated_at),
                "checkpoint": r.has_checkpoint,
                "active": r.name == state.active_model(),
            }
            for r in runs
        ]
    )
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "best val AUC": st.column_config.NumberColumn(format="%.4f"),
            "checkpoint": st.column_config.CheckboxColumn(),
            "active": st.column_config.CheckboxColumn("active model"),
        },
    )
    usable = [r.name for r in runs if r.has_checkpoint and r.state not in ("running", "starting")]
    if usable:
        c1, c2, _ = st.columns([2, 1.4, 3], vertical_alignment="bottom")
        pick = c1.selectbox(
            "Run with a checkpoint",
            usable,
            key="tr_use_pick",
            index=usable.index(state.active_model()) if state.active_model() in usable else 0,
        )
        if c2.button("Make it the active model", icon=":material/check_circle:", key="tr_use"):
            state.set_model(pick)
            st.rerun()


def main() -> None:
    style.header(
        "Train",
        "Training runs in the background: it survives closing the tab and restarting the app. Follow it live here.",
    )
    datasets = paths.list_datasets()
    runs = jobs.list_runs(paths.models_root())
    models = [r.name for r in runs if r.has_checkpoint]
    left, right = st.columns([5, 6], gap="large")
    with left:
        st.subheader("Start a run", anchor=False)
        if public.public_mode():
            public.note("Starting training runs and fine-tunes")
        elif not datasets:
            errors.show_problem(
                f"No dataset under {paths.display(paths.data_root())}/.", "Import one on the Data page.", page="data"
            )
        else:
            tab_new, tab_ft = st.tabs(["New run", "Fine-tune a run"])
            with tab_new:
                _new_run_form(datasets)
            with tab_ft:
                _finetune_form(datasets, sorted(models))
    with right:
        st.subheader("Live view", anchor=False)
        if "train_follow" in st.session_state:  # a run was started just now: list it too
            runs = jobs.list_runs(paths.models_root())
        names = [r.name for r in runs]
        if not names:
            st.caption("Start a run to follow it here.")
        else:
            ss = st.session_state
            if ss.get("train_follow") in names:
                ss["tr_follow"] = ss.pop("train_follow")
            if ss.get("tr_follow") not in names:
                running = [r.name for r in runs if r.state in ("running", "starting")]
                ss["tr_follow"] = (
                    running[0] if running else (state.active_model() if state.active_model() in names else names[0])
                )
            follow = st.selectbox("Run", names, key="tr_follow")
            live = jobs.run_state(paths.models_root() / follow) in ("running", "starting")
            st.fragment(_live, run_every=2 if live else None)(follow)
    st.subheader("Runs", anchor=False)
    _runs_table(runs)


shell.run_page(main)
