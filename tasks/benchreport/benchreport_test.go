package benchreport

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRotationPutsEachSideFirstInTurn(t *testing.T) {
	for n := 1; n <= 3; n++ {
		sides := make([]int, n)
		for k := range sides {
			sides[k] = k
		}
		var firsts []int
		for i := range n {
			order := Rotation(i, n)
			assert.Equal(t, sides, slices.Sorted(slices.Values(order)), "iteration %d of %d sides runs each side once", i, n)
			firsts = append(firsts, order[0])
		}
		assert.ElementsMatch(t, sides, firsts, "over %d iterations each side goes first once", n)
	}
	assert.Equal(t, []bool{false, true}, Turns(0), "the figure first in even iterations")
	assert.Equal(t, []bool{true, false}, Turns(1), "the baseline first in odd ones")
}
