// C++ templates and namespaces whose names the symbolizer must demangle as addr2line -C does.
#include <cstdio>
#include <vector>

namespace shop {
template <typename T, int N>
struct Basket {
	__attribute__((noinline)) T total(const std::vector<T> &items) const
	{
		T sum{};
		for (int r = 0; r < N; r++)
			for (const T &i : items)
				sum += i * static_cast<T>(r + 1);
		return sum;
	}
};
} // namespace shop

int main(int argc, char **)
{
	std::vector<double> d(1000, argc);
	std::vector<long> l(1000, argc);
	shop::Basket<double, 3> b1;
	shop::Basket<long, 5> b2;
	std::printf("%f %ld\n", b1.total(d), b2.total(l));
	return 0;
}
