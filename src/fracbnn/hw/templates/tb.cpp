// C testbench: runs the kernel on the stored test images, compares every
// logit with the golden engine's, and writes per-layer cycle counts.
// Exit status: 0 = all logits identical, 1 = a mismatch, 2 = I/O error.
#include <cstdint>
#include <cstdio>

#include "fracbnn_config.h"
#include "tb_data.h"

void fracbnn_top(const uint8_t image[IMG_BYTES], int64_t logits[NUM_CLASSES]);
uint64_t fb_loop_cycles(int row, int loop);
void fb_reset_counts();
extern int fb_bank_worst;

static uint64_t sums[FB_NUM_ROWS][FB_NUM_LOOPS];

int main(int argc, char **argv) {
    const char *out_path = argc > 1 ? argv[1] : "csim_result.json";
    FILE *f = std::fopen(out_path, "w");
    if (!f) {
        std::fprintf(stderr, "cannot write %s\n", out_path);
        return 2;
    }
    int bad_images = 0;
    long long bad_logits = 0;
    std::fprintf(f, "{\"images\": %d, \"cycles_per_image\": [", TB_N);
    for (int n = 0; n < TB_N; n++) {
        int64_t logits[NUM_CLASSES];
        fb_reset_counts();
        fracbnn_top(TB_IMAGES[n], logits);
        int wrong = 0;
        for (int k = 0; k < NUM_CLASSES; k++) {
            if (logits[k] != TB_LOGITS[n][k]) {
                if (bad_logits < 5)
                    std::printf("MISMATCH image %d class %d: kernel %lld golden %lld\n", n, k, (long long)logits[k],
                                (long long)TB_LOGITS[n][k]);
                wrong++;
                bad_logits++;
            }
        }
        bad_images += wrong ? 1 : 0;
        uint64_t total = 0;
        for (int r = 0; r < FB_NUM_ROWS; r++)
            for (int k = 0; k < FB_NUM_LOOPS; k++) {
                const uint64_t c = fb_loop_cycles(r, k);
                sums[r][k] += c;
                total += c;
            }
        std::fprintf(f, "%s%llu", n ? ", " : "", (unsigned long long)total);
    }
    std::fprintf(f, "], \"mismatched_images\": %d, \"mismatched_logits\": %lld, \"rows\": [", bad_images, bad_logits);
    double grand = 0;
    std::printf("%-22s %10s %10s %10s %10s %10s\n", "layer", "msb", "lsb", "epilogue", "other", "cycles");
    for (int r = 0; r < FB_NUM_ROWS; r++) {
        std::fprintf(f, "%s{\"name\": \"%s\", \"loops\": {", r ? ", " : "", ROW_NAMES[r]);
        double row = 0, other = 0;
        for (int k = 0; k < FB_NUM_LOOPS; k++) {
            const double avg = (double)sums[r][k] / (TB_N ? TB_N : 1);
            std::fprintf(f, "%s\"%s\": %.3f", k ? ", " : "", LOOP_NAMES[k], avg);
            row += avg;
            if (k != LOOP_MSB && k != LOOP_LSB && k != LOOP_EPILOGUE) other += avg;
        }
        std::fprintf(f, "}, \"cycles\": %.3f}", row);
        std::printf("%-22s %10.1f %10.1f %10.1f %10.1f %10.1f\n", ROW_NAMES[r],
                    (double)sums[r][LOOP_MSB] / TB_N, (double)sums[r][LOOP_LSB] / TB_N,
                    (double)sums[r][LOOP_EPILOGUE] / TB_N, other, row);
        grand += row;
    }
    std::fprintf(f, "], \"cycles\": %.3f, \"clock_mhz\": %.1f, \"max_bank_accesses\": %d}\n", grand, CLOCK_MHZ,
                 fb_bank_worst);
    std::fclose(f);
    std::printf("images %d, mismatched images %d, mean cycles/image %.1f = %.1f images/s at %.0f MHz\n", TB_N,
                bad_images, grand, CLOCK_MHZ * 1e6 / grand, CLOCK_MHZ);
    std::printf("most accesses to one acc/res/sc_buf bank in one epilogue/shortcut/pool/per-lane LSB iteration: %d "
                "(dual-port BRAM: <= 2 allows II = 1)\n", fb_bank_worst);
    std::printf(bad_images ? "CSIM FAILED: logits differ from the golden engine\n"
                           : "CSIM PASSED: all logits identical to the golden engine\n");
    return bad_images ? 1 : 0;
}
