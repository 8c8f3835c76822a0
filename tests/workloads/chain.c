/* main -> outer -> middle -> leaf, burning CPU in leaf. argv[1]: seconds to run. */
#include "chain.h"

int main(int argc, char **argv)
{
	run_chain(ddw_seconds(argc, argv));
	return 0;
}
