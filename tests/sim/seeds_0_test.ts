/** CI's simulation seeds, part 1 of 4 (tests/sim/seeds.ts). */

import { testSeeds } from "./seeds.ts";

testSeeds(0);
