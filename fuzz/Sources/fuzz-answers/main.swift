import CFuzzMain
import Foundation

exit(ekc_fuzz_main(CommandLine.argc, CommandLine.unsafeArgv))
