// C testbench of the ImageNet accelerator: runs the kernel on the stored test images, does the host's part
// (the classifier, int64 pooled @ W.T + b, as the ARM does it), compares every logit with the golden engine's
// and writes per-layer cycle and DRAM counts.
// Usage: csim [RESULT.json [PROJECT_DIR]]   (reads params.bin, tb_images.bin, tb_logits.bin, fc.bin there)
// Exit status: 0 = all logits identical, 1 = a mismatch, 2 = I/O error.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fracbnn_config.h"

void fracbnn_top(const bus_t *params, const bus_t *image, bus_t *codes_a, bus_t *codes_b, int64_t *pooled);
extern RxCount rx_counts[NUM_LAYERS];
void rx_reset_counts();

static bool read_file(const std::string &path, std::vector<uint8_t> &out) {
    FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    std::fseek(f, 0, SEEK_END);
    const long n = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    out.resize(n > 0 ? (size_t)n : 0);
    const size_t got = n > 0 ? std::fread(out.data(), 1, (size_t)n, f) : 0;
    std::fclose(f);
    return got == out.size();
}

static int io_error(const std::string &msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 2;
}

static std::vector<bus_t> to_bus(const uint8_t *bytes, size_t n) {
    std::vector<bus_t> v((n + BUS_BYTES - 1) / BUS_BYTES + 1);
    std::memset(v.data(), 0, v.size() * sizeof(bus_t));
    std::memcpy(v.data(), bytes, n);  // little-endian host: the bus words hold the bytes in DRAM order
    return v;
}

int main(int argc, char **argv) {
    const std::string out_path = argc > 1 ? argv[1] : "csim_result.json";
    const std::string dir = argc > 2 ? std::string(argv[2]) + "/" : std::string();
    std::vector<uint8_t> params, images, logits_raw, fc_raw;
    if (!read_file(dir + "params.bin", params) || params.size() != (size_t)PARAMS_BYTES)
        return io_error("cannot read " + dir + "params.bin (or its size differs from PARAMS_BYTES); regenerate");
    if (!read_file(dir + "tb_images.bin", images) || images.empty() || images.size() % IMG_BYTES)
        return io_error("cannot read " + dir + "tb_images.bin (N x IMG_BYTES bytes)");
    const int n_img = (int)(images.size() / IMG_BYTES);
    if (!read_file(dir + "tb_logits.bin", logits_raw) || logits_raw.size() != (size_t)n_img * NUM_CLASSES * 8)
        return io_error("cannot read " + dir + "tb_logits.bin (N x NUM_CLASSES int64)");
    if (!read_file(dir + "fc.bin", fc_raw) || fc_raw.size() != (size_t)(NUM_CLASSES * POOL_C + NUM_CLASSES) * 8)
        return io_error("cannot read " + dir + "fc.bin (NUM_CLASSES x POOL_C int64 weight, then the bias)");
    std::vector<int64_t> golden((size_t)n_img * NUM_CLASSES), fc((size_t)NUM_CLASSES * (POOL_C + 1));
    std::memcpy(golden.data(), logits_raw.data(), logits_raw.size());
    std::memcpy(fc.data(), fc_raw.data(), fc_raw.size());
    const int64_t *fc_w = fc.data(), *fc_b = fc.data() + (size_t)NUM_CLASSES * POOL_C;

    std::vector<bus_t> pbus = to_bus(params.data(), params.size());
    std::vector<bus_t> codes_a(CODE_BYTES / BUS_BYTES + 1), codes_b(CODE_BYTES / BUS_BYTES + 1);
    std::vector<int64_t> pooled(POOL_C);
    std::vector<RxCount> sums(NUM_LAYERS, RxCount{0, 0, 0, 0, 0, 0, 0, 0});
    std::vector<uint64_t> per_image;
    int bad_images = 0;
    long long bad_logits = 0;
    for (int n = 0; n < n_img; n++) {
        std::vector<bus_t> ibus = to_bus(images.data() + (size_t)n * IMG_BYTES, IMG_BYTES);
        rx_reset_counts();
        fracbnn_top(pbus.data(), ibus.data(), codes_a.data(), codes_b.data(), pooled.data());
        int wrong = 0;
        for (int k = 0; k < NUM_CLASSES; k++) {
            uint64_t acc = (uint64_t)fc_b[k];  // int64 with numpy's wrap-around
            for (int c = 0; c < POOL_C; c++) acc += (uint64_t)pooled[c] * (uint64_t)fc_w[(size_t)k * POOL_C + c];
            const int64_t got = (int64_t)acc, want = golden[(size_t)n * NUM_CLASSES + k];
            if (got != want) {
                if (bad_logits < 5)
                    std::printf("MISMATCH image %d class %d: kernel %lld golden %lld\n", n, k, (long long)got,
                                (long long)want);
                wrong++;
                bad_logits++;
            }
        }
        bad_images += wrong ? 1 : 0;
        uint64_t total = 0;
        for (int l = 0; l < NUM_LAYERS; l++) {
            const RxCount &c = rx_counts[l];
            RxCount &s = sums[l];
            s.msb += c.msb; s.lsb += c.lsb; s.lsb_full += c.lsb_full; s.epilogue += c.epilogue;
            s.compute += c.compute; s.dram += c.dram; s.dram_bytes += c.dram_bytes; s.cycles += c.cycles;
            total += c.cycles;
        }
        per_image.push_back(total);
    }

    FILE *f = std::fopen(out_path.c_str(), "w");
    if (!f) return io_error("cannot write " + out_path);
    const double N = (double)n_img;
    double grand = 0, bytes = 0, lsb = 0, lsb_full = 0;
    std::fprintf(f, "{\"family\": \"reactnet\", \"images\": %d, \"mismatched_images\": %d, \"mismatched_logits\": %lld, "
                 "\"cycles_each\": [", n_img, bad_images, bad_logits);
    for (int n = 0; n < n_img; n++) std::fprintf(f, "%s%llu", n ? ", " : "", (unsigned long long)per_image[n]);
    std::fprintf(f, "], \"layers\": [");
    std::printf("%-18s %11s %11s %11s %11s %11s %11s %12s\n", "layer", "msb", "lsb", "lsb_full", "epilogue", "dram",
                "cycles", "dram_bytes");
    for (int l = 0; l < NUM_LAYERS; l++) {
        const RxCount &s = sums[l];
        std::fprintf(f, "%s{\"name\": \"%s\", \"cycles\": %.3f, \"msb\": %.3f, \"lsb\": %.3f, \"lsb_full\": %.3f, "
                     "\"epilogue\": %.3f, \"compute\": %.3f, \"dram\": %.3f, \"dram_bytes\": %.3f}",
                     l ? ", " : "", LAYER_NAMES[l], s.cycles / N, s.msb / N, s.lsb / N, s.lsb_full / N, s.epilogue / N,
                     s.compute / N, s.dram / N, s.dram_bytes / N);
        std::printf("%-18s %11.1f %11.1f %11.1f %11.1f %11.1f %11.1f %12.1f\n", LAYER_NAMES[l], s.msb / N, s.lsb / N,
                    s.lsb_full / N, s.epilogue / N, s.dram / N, s.cycles / N, s.dram_bytes / N);
        grand += s.cycles / N;
        bytes += s.dram_bytes / N;
        lsb += s.lsb / N;
        lsb_full += s.lsb_full / N;
    }
    std::fprintf(f, "], \"cycles_per_image\": %.3f, \"dram_bytes\": %.3f, \"lsb\": %.3f, \"lsb_full\": %.3f, "
                 "\"clock_mhz\": %.1f}\n", grand, bytes, lsb, lsb_full, (double)CLOCK_MHZ);
    std::fclose(f);
    std::printf("images %d, mismatched images %d, mean cycles/image %.1f = %.1f images/s at %.0f MHz; "
                "DRAM %.0f bytes/image\n", n_img, bad_images, grand, CLOCK_MHZ * 1e6 / grand, (double)CLOCK_MHZ,
                bytes);
    std::printf(bad_images ? "CSIM FAILED: logits differ from the golden engine\n"
                           : "CSIM PASSED: all logits identical to the golden engine\n");
    return bad_images ? 1 : 0;
}
