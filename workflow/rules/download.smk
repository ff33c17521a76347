rule download:
    """Fetch the GWOSC strain files of the configured segments into a shared, checksummed cache.

    A local rule: compute nodes often have no internet.
    """
    output:
        manifest=GWOSC_MANIFEST,
    params:
        data=lambda wildcards: as_json(manifest_data(wildcards)),
    wildcard_constraints:
        manifest="|".join(re.escape(manifest_name(split)) for split in [SPLITS[0], *shifted_splits(config)]),
    localrule: True
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/download/{{manifest}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{manifest}}.tsv"
    shell:
        "python -m gwlora.gwosc_source --data-config {params.data:q} --manifest {output.manifest:q} --log {log:q}"
