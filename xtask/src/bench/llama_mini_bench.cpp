// llama-mini-bench: llama-bench's pp/tg measurement, for `cargo xtask bench run`.
//
// The llama.cpp that llama-cpp-sys-2 vendors ships without tools/ (no llama-bench), so
// xtask compiles this file against the very static libraries the crate built (same
// objects, same flags) and measures as llama-bench does: prompt processing = one batch of
// N_PROMPT random tokens decoded from an empty cache; generation = N_GEN tokens decoded one
// at a time from an empty cache; a warm-up decode first; best of REPS.
// Usage: llama-mini-bench MODEL THREADS N_PROMPT N_GEN REPS
// Prints: pp TOKENS_PER_SECOND / tg TOKENS_PER_SECOND
#include "llama.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

static void quiet(ggml_log_level, const char *, void *) {}

static double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL THREADS N_PROMPT N_GEN REPS\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const int threads = atoi(argv[2]), n_prompt = atoi(argv[3]), n_gen = atoi(argv[4]),
              reps = atoi(argv[5]);
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", path);
        return 2;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_gen + 16;
    cp.n_batch = n_prompt;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create a context\n");
        return 2;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::mt19937 rng(42);
    std::vector<llama_token> toks(n_prompt);
    llama_token bos = llama_vocab_bos(vocab);

    // Warm-up, as llama-bench does.
    llama_decode(ctx, llama_batch_get_one(&bos, 1));
    llama_synchronize(ctx);

    double best_pp = 0, best_tg = 0;
    for (int r = 0; r < reps; r++) {
        llama_memory_clear(llama_get_memory(ctx), false);
        toks[0] = bos;
        for (int i = 1; i < n_prompt; i++) toks[i] = rng() % n_vocab;
        double t0 = now_s();
        if (llama_decode(ctx, llama_batch_get_one(toks.data(), n_prompt)) != 0) return 2;
        llama_synchronize(ctx);
        double pp = n_prompt / (now_s() - t0);
        if (pp > best_pp) best_pp = pp;

        llama_memory_clear(llama_get_memory(ctx), false);
        llama_token t = bos;
        t0 = now_s();
        for (int i = 0; i < n_gen; i++) {
            if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) return 2;
            llama_synchronize(ctx);
            t = rng() % n_vocab;
        }
        double tg = n_gen / (now_s() - t0);
        if (tg > best_tg) best_tg = tg;
    }
    printf("pp %.3f\ntg %.3f\n", best_pp, best_tg);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
