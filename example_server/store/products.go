package store

import (
	"math/rand/v2"
	"strings"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
)

// catalogSeed seeds the generator of the starting catalog. Changing it
// changes every product.
const catalogSeed = 0x7468726966746261 // "thriftba"

// kind is a sort of product and what it may be made of.
type kind struct {
	noun      string
	category  string // also its first tag
	materials []string
}

// The vocabulary of the starting catalog.
var (
	kinds = []kind{
		{"Kettle", "kitchen", []string{"Steel", "Copper", "Glass"}},
		{"Teapot", "kitchen", []string{"Ceramic", "Cast-Iron", "Glass", "Stoneware"}},
		{"Skillet", "kitchen", []string{"Cast-Iron", "Steel", "Copper"}},
		{"Saucepan", "kitchen", []string{"Steel", "Copper", "Enamel"}},
		{"Chopping Board", "kitchen", []string{"Oak", "Bamboo", "Walnut"}},
		{"Serving Bowl", "tableware", []string{"Ceramic", "Stoneware", "Walnut", "Glass"}},
		{"Mug", "tableware", []string{"Ceramic", "Stoneware", "Enamel"}},
		{"Desk Lamp", "lighting", []string{"Steel", "Brass", "Oak"}},
		{"Floor Lamp", "lighting", []string{"Brass", "Walnut", "Linen"}},
		{"Throw Blanket", "textiles", []string{"Wool", "Linen", "Cotton"}},
		{"Cushion Cover", "textiles", []string{"Linen", "Cotton", "Velvet"}},
		{"Bookshelf", "furniture", []string{"Oak", "Walnut", "Steel"}},
		{"Stool", "furniture", []string{"Oak", "Bamboo", "Steel"}},
		{"Wall Clock", "decor", []string{"Oak", "Brass", "Glass"}},
		{"Vase", "decor", []string{"Glass", "Ceramic", "Stoneware"}},
		{"Water Bottle", "outdoor", []string{"Steel", "Glass", "Aluminium"}},
		{"Laundry Basket", "storage", []string{"Bamboo", "Wicker", "Cotton"}},
	}
	brands     = []string{"Nordlys", "Alba", "Kestrel", "Fjord", "Lumen", "Oakridge", "Vela", "Marlow", "Ostra", "Tiber", "Sable", "Corvo"}
	adjectives = []string{"Classic", "Compact", "Everyday", "Large", "Slim", "Round", "Handmade", "Nordic", "Vintage", "Modern", "Heavy", "Travel"}
	features   = []string{
		"made to last for years", "finished by hand in small batches", "built for daily use",
		"designed in Lisbon", "with a five-year warranty", "sized for small spaces",
	}
	notes = []string{
		"Ships within two working days.", "Wipe clean with a damp cloth.", "Gift wrapping available.",
		"Free returns within 30 days.", "Each piece varies slightly.", "Spare parts available for ten years.",
	}
	// extraTags follow the category tag; a product has one to three.
	extraTags = []string{"bestseller", "new", "eco", "gift-idea", "sale", "handmade", "limited", "premium"}
)

// NewProduct returns product id of the starting catalog: a pure function of
// id, so that every run and every test sees the same catalog.
func NewProduct(id int64) *catalog.Product {
	r := rand.New(rand.NewPCG(catalogSeed, uint64(id)))
	k := kinds[r.IntN(len(kinds))]
	brand, adjective := pick(r, brands), pick(r, adjectives)
	material := pick(r, k.materials)
	name := brand + " " + adjective + " " + material + " " + k.noun
	description := withArticle(strings.ToLower(adjective+" "+material+" "+k.noun)) +
		" from " + brand + ", " + pick(r, features) + ". " + pick(r, notes)

	tags := []string{k.category}
	for _, i := range r.Perm(len(extraTags))[:1+r.IntN(3)] {
		tags = append(tags, extraTags[i])
	}
	stock := r.Int32N(500)
	if r.IntN(10) == 0 {
		stock = 0 // out of stock
	}
	return &catalog.Product{
		ID:          id,
		Name:        name,
		Description: description,
		PriceCents:  int64(3+r.IntN(240))*100 - 1, // 2.99 to 241.99
		Currency:    "EUR",
		Tags:        tags,
		Stock:       stock,
	}
}

// withArticle puts "A" or "An" before phrase: "A vase", "An oak stool".
func withArticle(phrase string) string {
	if strings.ContainsRune("aeiou", rune(phrase[0])) {
		return "An " + phrase
	}
	return "A " + phrase
}

// pick returns one of words at random.
func pick(r *rand.Rand, words []string) string { return words[r.IntN(len(words))] }
