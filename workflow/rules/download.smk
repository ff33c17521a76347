rule download:
    """Fetch the GWOSC strain files of the configured segments into a shared, checksummed cache.

    A local rule: compute nodes often have no internet.
    """
    output:
        manifest=GWOSC_MANIFEST,
    params:
        data=as_json(config["data"]),
    localrule: True
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/download.log",
    benchmark:
        f"{RESULTS}/benchmarks/download.tsv"
    shell:
        "python -m gwlora.gwosc_source --data-config {params.data:q} --manifest {output.manifest:q} --log {log:q}"
