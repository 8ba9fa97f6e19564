/** CI's simulation seeds, part 2 of 4 (tests/sim/seeds.ts). */

import { testSeeds } from "./seeds.ts";

testSeeds(1);
