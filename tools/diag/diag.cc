#include <cmath>
#include <cstdio>
#include "data/token_array.h"
#include "model/dsa_model.h"
using namespace indexcache;
double Rel(const Tensor& a, const Tensor& b) { double n=0,d=0; for (int64_t i=0;i<a.numel();++i){double x=a.data<float>()[i]-b.data<float>()[i]; n+=x*x; d+=double(b.data<float>()[i])*b.data<float>()[i];} return std::sqrt(n/d); }
int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string dir = argv[i];
    auto cpu = DsaModel::Load(dir, std::nullopt, "cpu"); auto gpu = DsaModel::Load(dir, std::nullopt, "cuda");
    auto tok = ReadTokenArray(dir + "/tokens.npy", cpu->config().vocab_size);
    ForwardOptions o; o.trace.hidden_in = o.trace.topk = true;
    auto a = cpu->Forward(tok->Row(0), o); auto b = gpu->Forward(tok->Row(0), o);
    int L = cpu->config().num_layers;
    for (int l = 0; l < L; ++l) {
      const Tensor& ta = a->layers[l].topk; const Tensor& tb = b->layers[l].topk;
      int64_t same = 0, tot = 0; int64_t T = ta.size(0), K = ta.size(1);
      for (int64_t t = 0; t < T; ++t) for (int64_t j = 0; j < K; ++j) { int32_t s = ta.data<int32_t>()[t*K+j]; if (s < 0) continue; ++tot; for (int64_t k = 0; k < K; ++k) if (tb.data<int32_t>()[t*K+k] == s) { ++same; break; } }
      std::printf("%s layer %d: hidden_in rel %.3e, topk overlap %.4f\n", dir.c_str(), l, Rel(b->layers[l].hidden_in, a->layers[l].hidden_in), double(same)/tot);
    }
    std::printf("%s hidden_out rel %.3e logits rel %.3e\n", dir.c_str(), Rel(b->hidden_out, a->hidden_out), Rel(b->logits, a->logits));
    ForwardOptions inj; for (int l = 0; l < L; ++l) inj.inject_topk.push_back(a->layers[l].topk);
    auto c = gpu->Forward(tok->Row(0), inj);
    std::printf("%s with CPU topk injected: logits rel %.3e\n", dir.c_str(), Rel(c->logits, a->logits));
  }
}
