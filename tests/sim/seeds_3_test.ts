/** CI's simulation seeds, part 4 of 4 (tests/sim/seeds.ts). */

import { testSeeds } from "./seeds.ts";

testSeeds(3);
