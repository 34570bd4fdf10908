#ifndef EKC_CFUZZMAIN_H
#define EKC_CFUZZMAIN_H

/// Runs libFuzzer's driver on this executable's LLVMFuzzerTestOneInput. SwiftPM links
/// an executable's own main (renamed), so libFuzzer's main is not the entry point: a
/// target's main.swift calls this instead.
int ekc_fuzz_main(int argc, char **argv);

#endif
