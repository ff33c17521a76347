# gwlora: LoRA vs full fine-tuning vs frozen Whisper encoders on gravitational-wave strain.
#
#   snakemake --cores all                                  # full reproduction (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml    # offline demo, CPU, minutes
#
# The Snakefile stays thin: validate the config, include one rule file per stage,
# name the final targets. The logic lives in the `gwlora` package (src/gwlora).
import os
import re
import sys
from pathlib import Path

# Rules run this checkout's own package (src/gwlora), whether or not it was
# pip-installed and inside any environment Snakemake creates (--sdm conda).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
# The rules call `python`: the interpreter Snakemake itself runs under (its folder first on PATH),
# so `.venv/bin/snakemake` works from a shell that never activated the venv. Under --sdm conda
# each job's environment is activated after this and its own python comes first.
os.environ.update(PATH=os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")])))

from gwlora.cli import StageError
from gwlora.config import ConfigError, expand_variants, load_schema, shifted_splits, validate
from gwlora.constants import SPLITS
from gwlora.lr_search import extension_variants, grids

# config/config.yaml is the default; `--configfile FILE` replaces it rather than
# merging into it, so a config never inherits variants it does not list.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# `--config confirm_large=1` starts a plan of more than gwlora.resources.LARGE_PLAN_TRAIN_JOBS training jobs;
# it is an answer to the workflow, not a setting of the experiment, so it leaves the config before validation.
CONFIRM_LARGE = bool(config.pop("confirm_large", False))
try:
    # a job step (a cluster node runs each job through its own snakemake) re-reads this file per job: the main
    # process validated the config, so the step skips the checks that import peft to probe it (seconds a job)
    validate(config, load_schema(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"),
             probe_libraries=workflow.is_main_process)
except ConfigError as exc:
    sources = ", ".join(map(str, workflow.overwrite_configfiles)) or "config/config.yaml"
    raise WorkflowError(f"{sources}: {exc}") from None

report: "workflow/report/workflow.rst"  # `snakemake --report report.zip`: figures and tables under captions

RESULTS = f"results/{config['experiment']}"
REPORT = "report"  # the deck's source, relative to the working directory like every path here
VARIANTS = expand_variants(config["train"], config["model"])  # model.context may list contexts: a variant axis
LR_SEARCH = config["train"]["lr_search"]  # grids extended past their edges, round by round (workflow/rules/lr_search.smk)
LR_GRIDS = grids(VARIANTS)  # each compared variant's name -> its configured lr grid
# the runs an lr search may add (gwlora.lr_search): known before any run, so that they are wildcards like the grid's
EXTENSIONS = extension_variants(VARIANTS, LR_SEARCH["max_extensions"]) if LR_SEARCH["extend"] else {}
RUN_VARIANTS = {**VARIANTS, **EXTENSIONS}  # every run the workflow may train, by run id: the grid's and the search's
SEEDS = config["train"]["seeds"]
TEST_SETS = list(config["evaluation"]["test_sets"])  # shifted test sets, scored by every run (data folder shift-<name>)

wildcard_constraints:
    split="|".join(map(re.escape, [*SPLITS, *shifted_splits(config)])),
    variant="|".join(map(re.escape, RUN_VARIANTS)),
    search="|".join(map(re.escape, LR_GRIDS)),
    round=r"\d+",
    seed=r"\d+",
    test_set="|".join(map(re.escape, TEST_SETS)) or "(?!)",


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/encoder_outputs.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/lr_search.smk"
include: "workflow/rules/matched_filter.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/deck.smk"


onstart:
    # before the first job (never in a dry run): the plan's size (gwlora.resources, imported in common.smk as
    # `estimate`), and a stop for a huge one unless confirmed
    try:
        print(f"gwlora: {estimate.confirm_plan(config, CONFIRM_LARGE)}", file=sys.stderr)
    except StageError as exc:
        raise WorkflowError(str(exc)) from None


rule all:
    default_target: True
    input:
        rules.aggregate.output,
        rules.plot.output,
        rules.deck.output,


onerror:
    # Snakemake prints each failed job's full command line (JSON configs, a thousand characters each); the stages' own
    # one-line errors come once more here, last, where a reader looks first
    from gwlora.rulegraph import failures

    logs = [Path(str(p)) for p in (log if isinstance(log, (list, tuple)) else [log]) if p]  # Snakemake gives its log file(s)
    summary = failures("".join(p.read_text(errors="replace") for p in logs if p.is_file()))
    if summary:
        print("\nWhat failed (each job's own error; the traceback is in its log):", *summary, sep="\n  ", file=sys.stderr)
