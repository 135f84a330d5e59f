"""Search benchmark: the worker-built HNSW index against exact search, vector and halfvec.

    python bench/search.py                         # 100,000 chunks of 1536-d vectors
    python bench/search.py --rows 20000 --dims 384 --queries 50
    python bench/search.py --data isotropic        # the hard case: near-tied neighbours

Starts an embedded Postgres (or uses DATABASE_URL), writes a synthetic store of clustered unit
vectors directly (binary COPY) under a registered vectorizer, lets `vectorizer-worker --once`
build the index its `indexing_hnsw(min_rows => ...)` asks for, then runs top-k queries (fresh
points from the same distribution) with the index and with a sequential scan. Prints recall@k
of the index against the exact answer, the mean query times and the speedup; then the same for
a halfvec store of the same vectors, with the recall delta and both tables' sizes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backfill import start_database  # noqa: E402 - after the path set-up

CLUSTERS = 200
LATENT_DIMS = 32  # embeddings live near a low-dimensional manifold of the space
NOISE = 0.05  # isotropic noise off that manifold, relative to unit length


def synthetic(
    rows: int, queries: int, dims: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors and query vectors drawn alike: a mixture of clusters (topics) in a
    low-dimensional latent space, projected into `dims` dimensions, plus a little noise, unit
    length. Uniform random vectors in high dimensions are all about equally far apart, a
    pathological case no embedding model produces."""
    centres = rng.standard_normal((CLUSTERS, LATENT_DIMS)).astype(np.float32)
    spreads = rng.uniform(0.3, 0.8, CLUSTERS).astype(np.float32)
    projection = rng.standard_normal((LATENT_DIMS, dims)).astype(np.float32)

    def points(count: int) -> np.ndarray:
        cluster = rng.integers(0, CLUSTERS, count)
        offsets = rng.standard_normal((count, LATENT_DIMS)).astype(np.float32)
        vectors = (centres[cluster] + offsets * spreads[cluster, None]) @ projection
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors += rng.standard_normal((count, dims)).astype(np.float32) * (NOISE / np.sqrt(dims))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return points(rows), points(queries)


def isotropic(
    rows: int, queries: int, dims: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The hard case: clusters with full-dimensional noise, so a query's neighbours are all at
    almost the same distance (near-ties that half precision can reorder)."""
    centres = rng.standard_normal((CLUSTERS, dims)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def points(count: int) -> np.ndarray:
        noise = rng.standard_normal((count, dims)).astype(np.float32) * (0.35 / np.sqrt(dims))
        vectors = centres[rng.integers(0, CLUSTERS, count)] + noise
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return points(rows), points(queries)


def prepare(db_url: str, name: str, vectors: np.ndarray, vector_type: str) -> int:
    rows, dims = vectors.shape
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create table {} (id int primary key, body text)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("insert into {} select i, 'chunk ' || i from generate_series(1, %s) i").format(
                sql.Identifier(name)
            ),
            (rows,),
        )
        row = conn.execute(
            """
            select ai.create_vectorizer(%s::regclass, name => %s,
                loading => ai.loading_column('body'),
                embedding => ai.embedding_openai('text-embedding-3-small', %s),
                chunking => ai.chunking_none(),
                indexing => ai.indexing_hnsw(min_rows => %s),
                destination => ai.destination_table(vector_type => %s),
                enqueue_existing => false)
            """,
            (name, name, dims, rows, vector_type),
        ).fetchone()
        assert row is not None
        register_vector(conn)
        store = sql.Identifier(f"{name}_embedding_store")
        types = conn.execute(
            sql.SQL("select null::int, null::int, null::text, null::{}").format(
                sql.Identifier(vector_type)
            )
        ).description
        started = time.monotonic()
        with (
            conn.cursor() as cursor,
            cursor.copy(
                sql.SQL(
                    "copy {} (id, chunk_seq, chunk, embedding) from stdin with (format binary)"
                ).format(store)
            ) as copy,
        ):
            copy.set_types([column.type_code for column in types])
            converter = _halfvec if vector_type == "halfvec" else (lambda v: v)
            for index, vector in enumerate(vectors, start=1):
                copy.write_row((index, 0, f"chunk {index}", converter(vector)))
        conn.execute(sql.SQL("vacuum analyze {}").format(store))
        print(f"  wrote {rows} {vector_type}({dims}) chunks in {time.monotonic() - started:.1f}s")
        return int(row[0])


def _halfvec(vector: np.ndarray) -> object:
    from pgvector import HalfVector

    return HalfVector(vector)


def build_index(db_url: str, name: str, maintenance_work_mem: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORIZER_")}
    env.update(
        PYTHONPATH=str(REPO),
        OPENAI_API_KEY="sk-bench-not-used",  # nothing is queued: no request is made
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        VECTORIZER_INDEX_MAINTENANCE_WORK_MEM=maintenance_work_mem,
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vectorizer", "worker", "--db-url", db_url, "--once", "-i", name],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"worker failed:\n{result.stderr}")
    with psycopg.connect(db_url) as conn:
        state = conn.execute(
            "select index_state from ai.vectorizer_status where name = %s", (name,)
        ).fetchone()
    if state != ("ready",):
        raise SystemExit(f"no index after the worker ran ({state}):\n{result.stderr}")
    return time.monotonic() - started


def top_k(
    conn: psycopg.Connection,
    view: str,
    query: np.ndarray,
    k: int,
    ef_search: int | None,
    vector_type: str,
) -> tuple[list[int], float]:
    """The ids of the k nearest; `ef_search` None means exact (a sequential scan)."""
    with conn.transaction():
        if ef_search is None:
            conn.execute("set local enable_indexscan = off")
        else:
            conn.execute("select set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
        statement = sql.SQL(
            "select id from {} v order by v.embedding <=> cast(%s as {}) limit %s"
        ).format(sql.Identifier(view), sql.Identifier(vector_type))
        literal = "[" + ",".join(repr(float(x)) for x in query) + "]"
        started = time.perf_counter()
        ids = [row[0] for row in conn.execute(statement, (literal, k)).fetchall()]
        return ids, time.perf_counter() - started


def measure(
    db_url: str,
    name: str,
    queries: np.ndarray,
    k: int,
    ef_search: int,
    vector_type: str,
    truth: list[set[int]],
) -> tuple[float, float, float, float, list[set[int]]]:
    """recall@k against `truth` (else its own exact answers) and against its own exact
    answers, mean ANN and exact seconds, and the exact answers."""
    view = f"{name}_embedding"
    recalls, own_recalls, ann_times, exact_times, exact_sets = [], [], [], [], []
    with psycopg.connect(db_url, autocommit=True) as conn:
        top_k(conn, view, queries[0], k, ef_search, vector_type)  # warm up
        for index, query in enumerate(queries):
            ann, ann_seconds = top_k(conn, view, query, k, ef_search, vector_type)
            exact, exact_seconds = top_k(conn, view, query, k, None, vector_type)
            exact_sets.append(set(exact))
            reference = truth[index] if truth else set(exact)
            recalls.append(len(set(ann) & reference) / k)
            own_recalls.append(len(set(ann) & set(exact)) / k)
            ann_times.append(ann_seconds)
            exact_times.append(exact_seconds)
    return (
        float(np.mean(recalls)),
        float(np.mean(own_recalls)),
        float(np.mean(ann_times)),
        float(np.mean(exact_times)),
        exact_sets,
    )


def table_size(db_url: str, name: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select pg_table_size(%s::regclass)", (f"{name}_embedding_store",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument(
        "--ef-search",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[40, 100],
        help="hnsw.ef_search values to measure, comma-separated (default 40,100; the search"
        " API uses max(40, 2k))",
    )
    parser.add_argument(
        "--data",
        choices=("manifold", "isotropic"),
        default="manifold",
        help="manifold: clustered, low intrinsic dimension, like model embeddings (default);"
        " isotropic: clusters with full-dimensional noise, the hard case",
    )
    args = parser.parse_args()

    generate = synthetic if args.data == "manifold" else isotropic
    vectors, queries = generate(
        args.rows, args.queries, args.dims, np.random.default_rng(args.seed)
    )
    db_url, server = start_database()
    from vectorizer.install import install

    install(db_url)
    print(
        f"{args.rows} chunks ({args.data} data), {args.dims} dimensions,"
        f" {args.queries} queries, top-{args.k}"
    )

    results: dict[tuple[str, int], float] = {}
    sizes: dict[str, int] = {}
    truth: list[set[int]] = []
    for vector_type in ("vector", "halfvec"):
        name = f"bench_{vector_type}"
        print(f"{vector_type}:")
        prepare(db_url, name, vectors, vector_type)
        seconds = build_index(db_url, name, args.maintenance_work_mem)
        print(f"  the worker built the HNSW index in {seconds:.1f}s (vectorizer-worker --once)")
        size = table_size(db_url, name)
        print(f"  store table size: {size / 2**20:.1f} MiB")
        for ef_search in args.ef_search:
            recall, own_recall, ann, exact, exact_sets = measure(
                db_url, name, queries, args.k, ef_search, vector_type, truth
            )
            truth = truth or exact_sets  # float32 exact answers are the reference for both
            results[vector_type, ef_search] = recall
            print(
                f"  hnsw.ef_search={ef_search}: recall@{args.k} {recall:.4f} vs exact float32"
                f" search ({own_recall:.4f} vs exact search on this store); mean query:"
                f" index {ann * 1000:.2f} ms, sequential scan {exact * 1000:.2f} ms,"
                f" speedup {exact / ann:.1f}x"
            )
        sizes[vector_type] = size
    for ef_search in args.ef_search:
        delta = results["halfvec", ef_search] - results["vector", ef_search]
        print(f"halfvec vs vector, hnsw.ef_search={ef_search}: recall delta {delta:+.4f}")
    print(
        f"halfvec vs vector: store table size {sizes['halfvec'] / sizes['vector']:.2f}x"
        f" ({sizes['halfvec'] / 2**20:.1f} vs {sizes['vector'] / 2**20:.1f} MiB)"
    )
    del server


if __name__ == "__main__":
    main()
