/* Runs an LSTM compiled ahead of time by cellc, and prints its outputs.
 *
 *   cellc compile examples/lstm.rnn --dims X=8,H=16 -o build/cell.o
 *   cc -O2 -Ibuild examples/c/lstm_main.c build/cell.o -lm -o build/lstm
 *   build/lstm
 *
 * The weights and inputs follow a fixed pattern, so the output can be compared
 * with the JIT's (tests/aot.rs does). */
#include <stdio.h>
#include <stdlib.h>

#include "cell.h"

#define BATCH 3
#ifndef STEPS
#define STEPS 5 /* -DSTEPS=70 runs more steps than a hoisted object projects at once */
#endif

int main(void) {
    /* The object and the header must have been made together. */
    if (!lstm_check()) {
        fprintf(stderr, "cell.o and cell.h do not belong together\n");
        return 2;
    }
    /* The parameters, in the header's order, each a deterministic pattern. */
    const float *params[LSTM_PARAM_COUNT];
    for (int k = 0; k < LSTM_PARAM_COUNT; k++) {
        float *p = malloc(LSTM_PARAM_SIZES[k] * sizeof(float));
        for (size_t i = 0; i < LSTM_PARAM_SIZES[k]; i++)
            p[i] = (float)((long)((i * 37 + (size_t)k * 11) % 101) - 50) / 250.0f;
        params[k] = p;
    }
    float *packed = malloc(LSTM_WEIGHTS_LEN * sizeof(float));
    lstm_pack(params, packed);

    float *ws = calloc(lstm_workspace_len(BATCH), sizeof(float)); /* h = c = 0 */
    static float xs[STEPS * BATCH * LSTM_INPUT_X_LEN];
    static float ys[STEPS * BATCH * LSTM_OUTPUT_Y_LEN];
    for (int t = 0; t < STEPS; t++)
        for (int b = 0; b < BATCH; b++)
            for (int i = 0; i < LSTM_INPUT_X_LEN; i++)
                xs[(t * BATCH + b) * LSTM_INPUT_X_LEN + i] = (float)((t * 7 + b * 3 + i) % 13 - 6) / 6.0f;

    /* The first step alone, then the rest as a sequence. */
    lstm_step(packed, ws, BATCH, xs, ys);
    lstm_run(packed, ws, BATCH, STEPS - 1, xs + BATCH * LSTM_INPUT_X_LEN, ys + BATCH * LSTM_OUTPUT_Y_LEN);

    for (int t = 0; t < STEPS; t++)
        for (int j = 0; j < BATCH * LSTM_OUTPUT_Y_LEN; j++)
            printf("%.9g\n", ys[t * BATCH * LSTM_OUTPUT_Y_LEN + j]);
    float c[BATCH * LSTM_STATE_C_LEN];
    lstm_get_state_c(ws, BATCH, c);
    for (int j = 0; j < BATCH * LSTM_STATE_C_LEN; j++) printf("%.9g\n", c[j]);
    return 0;
}
