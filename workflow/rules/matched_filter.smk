from gwlora.families.matched_filter import matched_filter_variant
from gwlora.matched_filter_stage import run_files, workflow_banks

# The optimal detector beside the variants (train.variants.matched-filter): nothing trains; one run at the first seed,
# in a folder shaped like a training run's, that aggregate reads like any run (gwlora.matched_filter_stage)
MATCHED_FILTER = matched_filter_variant(config["train"])
MATCHED_FILTER_SEED = SEEDS[0]
MATCHED_FILTER_RUN = f"{RESULTS}/runs/{MATCHED_FILTER.run}/seed{MATCHED_FILTER_SEED}" if MATCHED_FILTER else None
MATCHED_FILTER_FILES = run_files(MATCHED_FILTER_RUN, TEST_SETS)  # what aggregate reads
# split -> (bank key, settings): val and test share the experiment's bank, and so does a test set that changes only the SNR
BANK_OF = workflow_banks(config)
BANKS = dict(BANK_OF.values())
BANK_FILE = f"{RESULTS}/matched_filter/bank-{{bank}}.json"


# inside `if`: rules only for a config that runs the matched filter (gwlora.rulegraph reads them too, indented, and the
# deck's workflow slide shows them where the config runs the matched filter)
if MATCHED_FILTER:

    rule template_bank:
        """A stochastic template bank over the training mass range for one set of data settings (named by their hash)."""
        output:
            BANK_FILE,
        wildcard_constraints:
            bank="[0-9a-f]{12}",
        params:
            # through params: the between-workflow cache hashes params, not wildcards
            settings=lambda wc: as_json(BANKS[wc.bank]),
            spec=as_json(config["train"]["variants"].get("matched-filter")),
            seed=MATCHED_FILTER_SEED,
        threads: 1  # placement proposes one template at a time
        cache: "omit-software"
        conda:
            "../../environment.yml"
        log:
            f"{RESULTS}/logs/template_bank/{{bank}}.log",
        shell:
            "python -m gwlora.matched_filter_stage --log {log:q} bank --settings {params.settings:q} --spec {params.spec:q}"
            " --seed {params.seed} --out {output:q}"

    rule matched_filter:
        """The matched filter's run: the val and test splits and every shifted test set scored by the network SNR of its bank."""
        input:
            val=f"{RESULTS}/data/val",
            test=f"{RESULTS}/data/test",
            bank=BANK_FILE.format(bank=BANK_OF["test"][0]),
            shifted=[f"{RESULTS}/data/{split}" for split in shifted_splits(config)],
            shifted_banks=[BANK_FILE.format(bank=BANK_OF[split][0]) for split in shifted_splits(config)],
        output:
            summary=f"{MATCHED_FILTER_RUN}/summary.json",
            curve=f"{MATCHED_FILTER_RUN}/curve.csv",
            predictions=f"{MATCHED_FILTER_RUN}/predictions.csv",
            record=f"{MATCHED_FILTER_RUN}/matched_filter.json",
            shifted=[f"{MATCHED_FILTER_RUN}/shift/{name}/{file}" for name in TEST_SETS for file in ("predictions.csv", "metrics.json")],
        params:
            variant=as_json(MATCHED_FILTER.to_dict()),
            seed=MATCHED_FILTER_SEED,
            fpr=config["train"]["tpr_at_fpr"],
            shift=lambda wc, input: " ".join(f"--shift {name} {data} {bank}"
                                             for name, data, bank in zip(TEST_SETS, input.shifted, input.shifted_banks)),
            run_dir=subpath(output.summary, parent=True),
        threads: config["train"]["threads"]
        conda:
            "../../environment.yml"
        log:
            f"{RESULTS}/logs/matched_filter.log",
        benchmark:
            f"{RESULTS}/benchmarks/matched_filter.tsv"
        shell:
            "python -m gwlora.matched_filter_stage --log {log:q} score --variant {params.variant:q} --seed {params.seed}"
            " --val {input.val:q} --test {input.test:q} --bank {input.bank:q} {params.shift} --fpr {params.fpr}"
            " --threads {threads} --out {params.run_dir:q}"
